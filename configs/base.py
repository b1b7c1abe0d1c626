"""The keys every config has, with their defaults; config files start from ``base_config``.

Lengths: an epoch is ``num_train_examples // batch_size`` steps; ``num_train_steps > 0``
overrides ``num_epochs``. Schedules that depend on the epoch use ``epoch = step //
steps_per_epoch`` and ``E = ceil(total_steps / steps_per_epoch)``.
"""

import ml_collections


def export_options(**extra) -> ml_collections.ConfigDict:
    """``config.export``: the artifact ``--mode=export`` writes beside model.json and the
    orbax variables ('orbax' = none, 'stablehlo', 'onnx'); ``all=True`` (PSS-Net) exports
    every kept subnet and the budget ladder. ``extra``: a method's own export keys."""
    return ml_collections.ConfigDict({"format": "orbax", "all": False, **extra})


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.method = "baseline"
    c.seed = 0
    c.batch_size = 128  # global, over all devices and processes
    c.eval_batch_size = 0  # 0: same as batch_size
    c.num_epochs = 1
    c.num_train_steps = 0  # > 0 overrides num_epochs
    # '' = $JAX_COMPILATION_CACHE_DIR, else <workdir>/xla_cache on several processes, else
    # ~/.cache/pssnet-dcff-jax/xla; 'off'; or a directory
    c.compilation_cache_dir = ""
    c.compute_dtype = "float32"  # or 'bfloat16' (params and optimizer state stay float32)
    c.log_every_steps = 50
    c.eval_every_steps = 0  # 0: at the end of every epoch
    c.checkpoint_every_steps = 0  # 0: at the end of every epoch
    c.keep_checkpoints = 3
    c.async_checkpoints = True
    c.keep_best_checkpoint = False  # also keep the best-eval state (selects on the eval split)
    c.export_from = "final"  # --mode=export source: 'final' or 'best' (needs the above)
    c.profile_steps = (0, 0)  # (start, stop): trace steps start+1..stop into workdir/profile
    c.init_from = ""  # an exported model of the same architecture to start from (fine-tuning)
    c.export = export_options()

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "embedded"
    c.dataset.data_dir = ""  # tfds data_dir or the IDX directory; '' = default location
    c.dataset.train_split = ""  # '' = the dataset's default ('train')
    c.dataset.eval_split = ""  # '' = the dataset's default ('test' / 'validation')
    c.dataset.image_size = 0  # 0 = native size (28 / 32 / 224)
    c.dataset.augment = "crop_flip"  # 'crop_flip' or 'none' (ImageNet always crops)
    c.dataset.crop_padding = 4
    c.dataset.rrc_min_scale = 0.08  # ImageNet random-resized-crop minimum area
    c.dataset.color_jitter = 0.0  # ImageNet: brightness/contrast/saturation strength
    c.dataset.shuffle_buffer = 10_000
    c.dataset.num_train_examples = 0  # > 0: use a fixed subset
    c.dataset.num_eval_examples = 0
    c.dataset.holdout_examples = 0  # > 0: this many training examples are held out for selection
    c.dataset.synthetic = False  # random images of the dataset's shape (benchmarks; no TF needed)

    c.model = ml_collections.ConfigDict()
    c.model.name = "resnet20"
    c.model.width_mult = 1.0
    c.model.small_input = False  # MobileNets: variant for 28-32 px inputs
    c.model.depthwise_impl = "auto"  # 'auto', 'conv' or 'shifts'

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.weight_decay = 5e-4
    c.optimizer.weight_decay_on = "all"  # 'all' or 'kernels'
    c.optimizer.schedule = "step"  # 'constant', 'step', 'cosine', 'cosine_epoch'
    c.optimizer.decay_epochs = (150, 225)
    c.optimizer.decay_factor = 0.1
    c.optimizer.warmup_epochs = 0
    return c
