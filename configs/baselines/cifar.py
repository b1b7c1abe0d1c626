"""Shared CIFAR-10 recipe of the DCFF code (../shared/papers/dcff.md §6.1).

300 epochs, batch 256, SGD momentum 0.9, weight decay 5e-4 on every parameter (PyTorch
coupled), lr 0.1 divided by 10 at epochs 150 and 225, pad-4 crop + flip.
"""

from configs.base import base_config


def cifar_config(model_name: str):
    c = base_config()
    c.dataset.name = "cifar10"
    c.dataset.crop_padding = 4
    c.model.name = model_name
    c.batch_size = 256
    c.num_epochs = 300
    c.log_every_steps = 100
    c.optimizer.learning_rate = 0.1
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.optimizer.weight_decay_on = "all"
    c.optimizer.schedule = "step"
    c.optimizer.decay_epochs = (150, 225)
    c.optimizer.decay_factor = 0.1
    return c
