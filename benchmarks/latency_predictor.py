"""How well the latency table predicts whole subnets on this device.

    python benchmarks/latency_predictor.py [--config=configs/pssnet/embedded_latency.py]
        [--table=PATH] [--subnets=40] [--batch_size=N] [--out=FILE.json]

Builds (or continues) the config's latency table (``--table``, default
``config.latency.table``), draws ``--subnets`` random subnets of the structure space (seeded,
none of the table's calibration subnets), measures each exported plain subnet end to end
(jitted, batch ``latency.batch_size``, median of ``latency.repeats`` after warm-up) and
compares with the calibrated prediction and the raw sum of the table's units. Prints one line
per subnet and the median and worst relative errors last.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from common_jax import data  # noqa: E402
from common_jax.provenance import provenance  # noqa: E402
from pssnet_dcff import api  # noqa: E402
from pssnet_jax import latency  # noqa: E402
from pssnet_jax.space import space_from_config  # noqa: E402


def compare(config, table_path: str, count: int, seed: int = 0) -> dict:
    """Table build time, and predicted vs measured latency of ``count`` subnets."""
    start = time.perf_counter()
    table = api.latency_table(config, table_path)
    build_s = time.perf_counter() - start
    space = space_from_config(config, data.dataset_info(config.dataset.name))
    rng = np.random.default_rng(seed)
    calibration = set(latency.calibration_set(space, config.latency.calibration_subnets))
    subnets = []
    while len(subnets) < count:
        subnet = space.subnet(*space.random(rng))
        if subnet not in subnets and subnet not in calibration:
            subnets.append(subnet)
    rows = []
    for subnet in subnets:
        measured = latency.measure_subnet_ms(space, subnet, config.latency.batch_size,
                                             config.latency.repeats,
                                             config.model.depthwise_impl)
        predicted = latency.predict_subnet_ms(table, space, subnet)
        raw = latency.predict_subnet_ms(table, space, subnet, calibrated=False)
        rows.append({**subnet.to_json(), "measured_ms": measured, "predicted_ms": predicted,
                     "raw_sum_ms": raw, "relative_error": (predicted - measured) / measured,
                     "raw_relative_error": (raw - measured) / measured})
    errors = [abs(r["relative_error"]) for r in rows]
    raw_errors = [abs(r["raw_relative_error"]) for r in rows]
    return {"device": table["device"], "jax": jax.__version__, "table": table_path,
            "date": datetime.date.today().isoformat(), "provenance": provenance(),
            "units": len(table["units"]), "dense": table["dense"], "build_s": build_s,
            "batch_size": table["batch_size"], "calibration": table["calibration"],
            "subnets": rows, "median_abs_error": statistics.median(errors),
            "worst_abs_error": max(errors),
            "mean_signed_error": statistics.mean(r["relative_error"] for r in rows),
            "raw_median_abs_error": statistics.median(raw_errors),
            "raw_worst_abs_error": max(raw_errors)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/pssnet/embedded_latency.py")
    parser.add_argument("--table", default="")
    parser.add_argument("--subnets", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=0, help="default latency.batch_size")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.subnets < 2:
        raise SystemExit(f"--subnets={args.subnets}: need at least 2 (the min and max net)")
    overrides = {"latency.batch_size": args.batch_size} if args.batch_size else {}
    config = api.load_config(args.config, need_latency_table=False, **overrides)
    result = compare(config, args.table or config.latency.table, args.subnets)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    for row in result["subnets"]:
        print(f"{row['resolution']:>4} px {str(row['channels']):<40} measured "
              f"{row['measured_ms']:7.3f} ms  predicted {row['predicted_ms']:7.3f} ms "
              f"({100 * row['relative_error']:+6.1f}%), raw sum {row['raw_sum_ms']:7.3f} ms")
    print(f"{result['device']}, {result['units']} units ({result['build_s']:.0f} s), batch "
          f"{result['batch_size']}, {len(result['subnets'])} subnets: calibrated median "
          f"|error| {100 * result['median_abs_error']:.1f}%, worst "
          f"{100 * result['worst_abs_error']:.1f}%, mean signed "
          f"{100 * result['mean_signed_error']:+.1f}%; raw sum median "
          f"{100 * result['raw_median_abs_error']:.1f}%, worst "
          f"{100 * result['raw_worst_abs_error']:.1f}%")


if __name__ == "__main__":
    main()
