"""Full-width ResNet-50 on ImageNet with the DCFF step recipe (../shared/papers/dcff.md §6.2).

90 epochs, batch 256, SGD momentum 0.9, weight decay 1e-4, lr 0.1 with a 5-epoch linear
warm-up (per step) and x0.1 at epochs 30, 60 and 80; random-resized crop + flip.

    python launch.py --config=configs/baselines/resnet50_imagenet.py --workdir=runs/r50 \
        --config.dataset.data_dir=gs://bucket/tensorflow_datasets
"""

from configs.base import base_config


def get_config():
    c = base_config()
    c.dataset.name = "imagenet2012"
    c.model.name = "resnet50"
    c.batch_size = 256
    c.num_epochs = 90
    c.log_every_steps = 100
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 1e-4
    c.optimizer.weight_decay_on = "all"
    c.optimizer.schedule = "step"
    c.optimizer.decay_epochs = (30, 60, 80)
    c.optimizer.warmup_epochs = 5
    return c
