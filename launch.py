"""One entry point for every config and mode.

    python launch.py --config=configs/<file>.py[:arg] --workdir=<dir> \
        --mode=train|eval|export|profile|latency_table [--config.<key>=<value> ...] [--dry_run]

With no flags it trains the embedded default (configs/default.py) into ./runs/default.
``--dry_run`` checks the flags and the config, prints the resolved config and exits without
compiling anything. ``--stop_after=N`` ends training at global step N with a checkpoint (the
schedule is unchanged); the same command without it resumes. On SIGTERM a run finishes its
step, writes a checkpoint and exits with code 75; the same command resumes it. Several
processes: ``--distributed`` (or ``--coordinator_address/--num_processes/--process_id``).
Errors in flags, config or inputs print one ``error: ...`` line and exit with code 2.
"""

import json
import logging
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags. config_flags reads ``--config.*`` overrides from sys.argv here."""
    config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (.py[:arg]).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", "", "Run directory; default runs/<config file name>.")
    flags.DEFINE_enum("mode", "train", ["train", "eval", "export", "profile", "latency_table"],
                      "What to do (latency_table: PSS-Net configs; writes config.latency.table "
                      "or <workdir>/latency_table.json).")
    flags.DEFINE_bool("dry_run", False, "Validate flags and config, print it, exit.")
    flags.DEFINE_integer("stop_after", 0, "Stop training at global step N (0: run to the end); "
                         "latency_table: measure at most N more units.")
    flags.DEFINE_string("export_dir", "", "Where --mode=export writes; default <workdir>/export.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detects "
                      "TPU pods and SLURM; or give the three flags below).")
    flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (jax.distributed).")
    flags.DEFINE_integer("num_processes", 0, "Number of processes (jax.distributed).")
    flags.DEFINE_integer("process_id", -1, "This process's index (jax.distributed).")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def default_workdir() -> str:
    config_path = config_flags.get_config_filename(FLAGS["config"]).split(":")[0]
    return os.path.join("runs", os.path.splitext(os.path.basename(config_path))[0])


def flag_error(error: Exception, argv) -> str:
    """One line for a flag or config-override problem, naming the offending argument."""
    text = " ".join(str(error).replace("\\n", " ").split())
    if isinstance(error, (KeyError, AttributeError)):
        key = re.search(r"'\\*'?([A-Za-z0-9_]+)", text)
        key = key.group(1) if key else text
        hint = re.search(r'Did you mean "([^"]+)"', text)
        args = [a.split("=")[0] for a in argv
                if a.startswith("--config.") and a.split("=")[0].endswith("." + key)]
        return (f"{args[0] if args else '--config.' + key}: unknown config key {key!r}"
                + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
                + "; --dry_run prints the keys of a config")
    if isinstance(error, OSError):
        path = re.search(r"No such file or directory: '([^']+)'", text)
        return (f"--config={path.group(1)}: no such config file; expected a path like "
                f"configs/baselines/resnet56_cifar10.py" if path else f"--config: {text}")
    return text


def main(argv) -> None:
    try:
        define_flags()
        FLAGS(argv)
        config = FLAGS.config
        config.get("method")  # config_flags reports a failed config load only on first use
    except (flags.Error, KeyError, AttributeError, OSError, TypeError, ValueError) as e:
        fail(flag_error(e, argv))
    # force: config files may import libraries whose import installs absl's root handler.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout, force=True)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend-probing chatter
    for handler in logging.getLogger().handlers:  # orbax notes every read-only (eval) restore
        handler.addFilter(lambda record: "directory is read only" not in record.getMessage())

    from common_jax import config_check
    from pssnet_dcff import registry
    workdir = FLAGS.workdir or default_workdir()
    try:
        registry.validate(config, need_latency_table=FLAGS.mode != "latency_table")
        config_check.validate_workdir(workdir)
    except ValueError as e:
        fail(str(e))
    if FLAGS.dry_run:
        print(config.to_json_best_effort(indent=2))
        print(json.dumps({"dry_run": "ok", "mode": FLAGS.mode, "workdir": workdir}))
        return
    initialize_distributed()
    try:
        run_mode(config, workdir)
    except ValueError as e:
        fail(str(e))


def initialize_distributed() -> None:
    """jax.distributed.initialize() when asked, before anything touches a device."""
    explicit = FLAGS.coordinator_address or FLAGS.num_processes or FLAGS.process_id >= 0
    if not (FLAGS.distributed or explicit):
        return
    import jax
    kwargs = {}
    if explicit:
        kwargs = {"coordinator_address": FLAGS.coordinator_address or None,
                  "num_processes": FLAGS.num_processes or None,
                  "process_id": FLAGS.process_id if FLAGS.process_id >= 0 else None}
    jax.distributed.initialize(**kwargs)


def run_mode(config, workdir: str) -> None:
    """The mode, through the same functions as the Python API (pssnet_dcff/api.py)."""
    from pssnet_dcff import api
    if FLAGS.mode == "profile":
        print(api.profile_report(config))
    elif FLAGS.mode == "train":
        summary = api.train(config, workdir, stop_after=FLAGS.stop_after or None).summary
        print(json.dumps(summary))
        if summary.get("preempted"):
            from common_jax.preemption import PREEMPTED_EXIT_CODE
            sys.exit(PREEMPTED_EXIT_CODE)
    elif FLAGS.mode == "eval":
        print(json.dumps(api.evaluate(config, workdir)))
    elif FLAGS.mode == "latency_table":
        if "latency" not in config:
            raise ValueError(f"--mode=latency_table needs a PSS-Net config with a latency "
                             f"section; config.method={config.method!r}")
        path = config.latency.table or os.path.join(workdir, "latency_table.json")
        table = api.latency_table(config, path, stop_after=FLAGS.stop_after or None)
        print(json.dumps({"latency_table": path, "units": len(table["units"]),
                          "complete": table["complete"], "device": table["device"]}))
    else:
        print(api.export(config, workdir, FLAGS.export_dir or None))


if __name__ == "__main__":
    main(sys.argv)
