"""PSS-Net on the embedded subset with pools keyed by latency predicted for this device.

The embedded MobileNetV2 supernet (configs/pssnet/embedded.py) with 8 latency pools placed
evenly between the min and the max net's predicted latency (batch 1), from a table measured on
the machine that trains. Build the table first (about 2 minutes on 2 CPU cores), then train;
export by latency budget:

    python launch.py --config=configs/pssnet/embedded_latency.py --mode=latency_table
    python launch.py --config=configs/pssnet/embedded_latency.py --workdir=runs/pss_latency
    python launch.py --config=configs/pssnet/embedded_latency.py --workdir=runs/pss_latency \\
        --mode=export --config.export.latency_ms=1.5

``:multi`` keys pools by FLOPs and latency at once (the -M variant).
"""

from configs.pssnet.embedded import get_config as embedded_config

TABLE = "runs/latency/embedded_mobilenet_v2.json"


def get_config(variant: str = "latency"):
    if variant not in ("latency", "multi"):
        raise ValueError(f"config argument {variant!r}: expected 'latency' or 'multi'")
    c = embedded_config()
    c.pssnet.constraints = ("latency",) if variant == "latency" else ("flops", "latency")
    c.latency.table = TABLE
    return c
