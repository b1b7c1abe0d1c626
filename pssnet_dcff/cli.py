r"""One entry point for every config and mode (``python launch.py`` in a checkout, or the
``pssnet-dcff`` command that ``pip install`` creates).

    python launch.py --config=configs/<file>.py[:arg] --workdir=<dir> \
        --mode=train|eval|export|profile|latency_table|import [--config.<key>=<value> ...] \
        [--dry_run]

``--help`` lists the modes and this launcher's flags, ``--helpfull`` every flag.
Config files are addressed by path (``pssnet_dcff/config_files.py``): relative to the
current directory, this checkout, or the copy that ``pip install`` keeps as package data.

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

from pssnet_dcff import config_files  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags. config_flags reads ``--config.*`` overrides from sys.argv here."""
    config_flags.DEFINE_config_file("config", "configs/default.py", "Config file (.py[:arg]).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", "", "Run directory; default runs/<config file name>.")
    flags.DEFINE_enum("mode", "train", ["train", "eval", "export", "profile", "latency_table",
                                        "import"],
                      "What to do (latency_table: PSS-Net configs; writes config.latency.table "
                      "or <workdir>/latency_table.json).")
    flags.DEFINE_bool("dry_run", False, "Validate flags and config, print it, exit.")
    flags.DEFINE_integer("stop_after", 0, "Stop training at global step N (0: run to the end); "
                         "latency_table: measure at most N more units.")
    flags.DEFINE_string("export_dir", "", "Where --mode=export and --mode=import write; default "
                        "<workdir>/export.")
    flags.DEFINE_string("import_from", "", "--mode=import: a published PyTorch file (.pt/.pth).")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (auto-detects "
                      "TPU pods and SLURM; or give the three flags below).")
    flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (jax.distributed).")
    flags.DEFINE_integer("num_processes", 0, "Number of processes (jax.distributed).")
    flags.DEFINE_integer("process_id", -1, "This process's index (jax.distributed).")


HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "--helpfull")
MODES_HELP = """modes (--mode):
  train          train the config (resumes from the newest checkpoint in --workdir)
  eval           evaluate the newest checkpoint (PSS-Net: re-run the subnet selection)
  export         write a plain model (PSS-Net: the best kept subnet for config.export);
                 --config.export.format=stablehlo|onnx adds a deployable artifact,
                 --config.export.all=True (PSS-Net) every kept subnet and ladder.json,
                 --config.export.subnet='{"resolution": R, "channels": [...]}' one subnet
  profile        per-group FLOPs/params table and JSON totals; compiles nothing
  latency_table  PSS-Net: measure the latency table of the structure space on this device
  import         --import_from=FILE: a published PyTorch file as an export (DCFF compact
                 and baseline CIFAR ResNets, VGG-16, GoogLeNet, ResNet-50; torchvision
                 MobileNetV2), or an official PSS-Net checkpoint as --workdir (pools too)
"""


def print_help(argv) -> None:
    """--help: usage, the modes and this launcher's flags; --helpfull: every flag."""
    print(__doc__.strip() + "\n\n" + MODES_HELP)
    if "--helpfull" in argv:
        print(FLAGS.get_help())
    else:
        print(FLAGS.module_help(sys.modules[__name__]))


def resolve_config_flag(argv) -> list:
    """``argv`` with ``--config=<path>[:arg]`` pointing at the resolved config file
    (``pssnet_dcff/config_files.py``); unchanged when it does not exist (the flag parser
    reports that)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            path, _, rest = arg.split("=", 1)[1].partition(":")
            try:
                out[i] = f"--config={config_files.resolve(path)}" + (f":{rest}" if rest else "")
            except ValueError:
                pass
    if not any(a.startswith("--config") for a in out):  # the default config
        out.append(f"--config={config_files.resolve('configs/default.py')}")
    return out


def fail(message: str) -> None:
    """Prints the one error line and exits with code 2. The exit skips interpreter clean-up:
    after a failed checkpoint read or write, orbax's and gcsfs's event-loop threads would
    otherwise print tracebacks of their own shutdown under the line."""
    print(f"error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)


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
    typed = re.search(r"flag --config\.([\w.]+)=(.*?): (invalid literal for int|could not "
                      r"convert string to float|\('Non-boolean)", text)
    if typed:
        from common_jax import config_check
        expected = {"i": "int", "c": "float", "(": "bool"}[typed.group(3)[0]]
        return config_check.override_type_error(typed.group(1), typed.group(2), expected)
    if isinstance(error, OSError):
        path = re.search(r"No such file or directory: '([^']+)'", text)
        return (f"--config={path.group(1)}: no such config file; expected a path like "
                f"configs/baselines/resnet56_cifar10.py" if path else f"--config: {text}")
    return text


def main(argv) -> None:
    if any(arg.split("=")[0] in HELP_FLAGS for arg in argv[1:]):
        define_flags()
        print_help(argv)
        return
    argv = resolve_config_flag(argv)
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
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing
    # gcsfs and fsspec's read-ahead log a traceback for every request they give up on; the
    # error reaches common_jax.storage, which retries and reports it in one line of its own.
    for name in ("gcsfs", "fsspec"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
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
    prefix = f"[process {jax.process_index()}/{jax.process_count()}] "
    for handler in logging.getLogger().handlers:  # say which process wrote each line
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s", "%H:%M:%S"))


def run_mode(config, workdir: str) -> None:
    """The mode, through the same functions as the Python API (pssnet_dcff/api.py)."""
    from pssnet_dcff import api, locations
    if FLAGS.mode == "profile":
        print(api.profile_report(config))
    elif FLAGS.mode == "train":
        summary = api.train(config, workdir, stop_after=FLAGS.stop_after or None,
                            verbose=False).summary
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
        locations.check(config, workdir, "latency_table")
        table = api.latency_table(config, path, stop_after=FLAGS.stop_after or None)
        print(json.dumps({"latency_table": path, "units": len(table["units"]),
                          "complete": table["complete"], "device": table["device"]}))
    elif FLAGS.mode == "import":
        if not FLAGS.import_from:
            raise ValueError("--mode=import needs --import_from=PATH (a .pt/.pth file)")
        print(api.import_published(config, workdir, FLAGS.import_from, FLAGS.export_dir or None))
    else:
        print(api.export(config, workdir, FLAGS.export_dir or None))


def run() -> None:
    """The console-script entry point (``pssnet-dcff``)."""
    main(sys.argv)


if __name__ == "__main__":
    run()
