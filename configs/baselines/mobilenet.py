"""Shared ImageNet recipe of the PSS-Net code (../shared/papers/pssnet.md §8).

250 epochs, batch 1024, Nesterov SGD momentum 0.9, lr 0.3 with per-step cosine decay to 0 and
no warm-up, weight decay 1e-4 on conv kernels with more than one input channel per group and
on the classifier kernel (none on depthwise convs, BN or biases), random-resized crop with
area 0.25..1, colour jitter 0.4 and flip. The official code's PCA lighting noise is a no-op
(pssnet.md §8) and is left out.
"""

from configs.base import base_config


def mobilenet_config(model_name: str):
    c = base_config()
    c.dataset.name = "imagenet2012"
    c.dataset.rrc_min_scale = 0.25
    c.dataset.color_jitter = 0.4
    c.model.name = model_name
    c.batch_size = 1024
    c.num_epochs = 250
    c.log_every_steps = 100
    c.optimizer.learning_rate = 0.3
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-4
    c.optimizer.weight_decay_on = "kernels"
    c.optimizer.schedule = "cosine"
    return c
