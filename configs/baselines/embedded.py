"""Baseline on the embedded Fashion-MNIST subset: a few CPU minutes, no network.

    python launch.py --config=configs/baselines/embedded.py --workdir=runs/embedded

``:mobilenet_v2`` (or any model name) trains that model instead (small-input variants for
MobileNets). Takes about 4 minutes on 2 CPU cores for the default ResNet-20.
"""

from configs.base import base_config


def get_config(arg: str = "resnet20"):
    c = base_config()
    c.dataset.name = "embedded"
    c.dataset.crop_padding = 2
    c.model.name = arg
    c.model.small_input = arg.startswith("mobilenet")
    c.batch_size = 128
    c.num_epochs = 10
    c.log_every_steps = 20
    c.optimizer.learning_rate = 0.1
    c.optimizer.nesterov = True
    c.optimizer.schedule = "cosine"
    return c
