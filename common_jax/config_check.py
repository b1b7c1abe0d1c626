"""Checks the keys every config has before anything is loaded or compiled.

Each problem raises ``ValueError`` with one line that names the key, the bad value and what
is allowed. A method checks its own section (its ``validate``, called through the registry);
checks that need the dataset size or the device count run in ``common_jax.run.setup``.
"""

from __future__ import annotations

from common_jax import artifacts, data, models, optim, paths, storage
from common_jax.data.memory import AUGMENTATIONS


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _positive_int(config, key: str, allow_zero: bool = False) -> None:
    value = config[key] if "." not in key else config[key.split(".")[0]][key.split(".")[1]]
    ok = isinstance(value, int) and not isinstance(value, bool) and (
        value >= 0 if allow_zero else value > 0)
    _require(ok, f"config.{key}={value!r} must be a {'non-negative' if allow_zero else 'positive'}"
                 f" integer")


def _one_of(key: str, value, allowed) -> None:
    _require(value in allowed, f"config.{key}={value!r}: expected one of {list(allowed)}")


def _check_model_name(name: str) -> None:
    """A built-in model, or a user family's import path that imports and resolves."""
    if not models.is_import_path(name):
        _one_of("model.name", name, models.MODEL_NAMES)
        return
    try:
        models.family_of(name)
    except ValueError as error:
        raise ValueError(f"config.model.name: {error}") from None


def validate(config, init_from_export: bool = True) -> None:
    """Raises ValueError for the first invalid value of the common keys of ``config``;
    ``init_from_export=False``: the method checks what ``config.init_from`` names itself."""
    for key in ("batch_size", "log_every_steps", "keep_checkpoints"):
        _positive_int(config, key)
    for key in ("eval_batch_size", "num_epochs", "num_train_steps", "eval_every_steps",
                "checkpoint_every_steps", "seed"):
        _positive_int(config, key, allow_zero=True)
    _require(config.num_epochs > 0 or config.num_train_steps > 0,
             "config.num_epochs and config.num_train_steps are both 0; set one of them > 0")
    steps = tuple(config.profile_steps)
    _require(len(steps) == 2 and all(isinstance(v, int) and v >= 0 for v in steps)
             and steps[0] <= steps[1],
             f"config.profile_steps={steps!r}: expected (start, stop) with 0 <= start <= stop "
             f"(steps start+1..stop are traced; (0, 0) = off)")
    _one_of("compute_dtype", config.compute_dtype, models.DTYPES)
    _one_of("export_from", config.export_from, ("final", "best"))
    _one_of("export.format", config.export.format, artifacts.FORMATS)
    _require(isinstance(config.export.all, bool),
             f"config.export.all={config.export.all!r}: expected True or False")
    if config.init_from and init_from_export:
        _require(storage.exists(paths.join(config.init_from, "model.json")),
                 f"config.init_from={config.init_from!r} is not an exported model (no "
                 f"model.json)")
    _require(config.export_from == "final" or config.keep_best_checkpoint,
             "config.export_from='best' needs config.keep_best_checkpoint=True during training")

    ds = config.dataset
    _one_of("dataset.name", ds.name, data.DATASETS)
    _one_of("dataset.augment", ds.augment, AUGMENTATIONS)
    for key in ("image_size", "crop_padding", "num_train_examples", "num_eval_examples",
                "holdout_examples"):
        _positive_int(config, f"dataset.{key}", allow_zero=True)
    _positive_int(config, "dataset.shuffle_buffer")
    _require(0 < ds.rrc_min_scale <= 1,
             f"config.dataset.rrc_min_scale={ds.rrc_min_scale!r} must be in (0, 1]")
    _require(0 <= ds.color_jitter < 1,
             f"config.dataset.color_jitter={ds.color_jitter!r} must be in [0, 1)")

    _check_model_name(config.model.name)
    _require(config.model.width_mult > 0,
             f"config.model.width_mult={config.model.width_mult!r} must be positive")
    _one_of("model.depthwise_impl", config.model.depthwise_impl, ("auto", "conv", "shifts"))

    opt = config.optimizer
    _one_of("optimizer.schedule", opt.schedule, optim.SCHEDULES)
    _one_of("optimizer.weight_decay_on", opt.weight_decay_on, optim.WEIGHT_DECAY_ON)
    _require(opt.learning_rate > 0,
             f"config.optimizer.learning_rate={opt.learning_rate!r} must be positive")
    _require(0 <= opt.momentum < 1,
             f"config.optimizer.momentum={opt.momentum!r} must be in [0, 1)")
    _require(opt.weight_decay >= 0,
             f"config.optimizer.weight_decay={opt.weight_decay!r} must be >= 0")
    _require(opt.warmup_epochs >= 0,
             f"config.optimizer.warmup_epochs={opt.warmup_epochs!r} must be >= 0")
    _require(all(isinstance(e, int) and e > 0 for e in opt.decay_epochs),
             f"config.optimizer.decay_epochs={tuple(opt.decay_epochs)!r} must be positive "
             f"integers")


def validate_workdir(workdir: str) -> None:
    if paths.is_url(workdir):  # object stores have no files that block a folder name
        return
    _require(not paths.exists(workdir) or paths.isdir(workdir),
             f"--workdir={workdir!r} is a file; expected a directory (it is created if missing)")


def override_type_error(key: str, value, expected: str) -> str:
    """The one-line message for an override of the wrong type (command line and Python API)."""
    return f"config.{key}={value}: expected {expected}, the type of this key in the config"
