"""DCFF ResNet-50 on ImageNet (../shared/papers/dcff.md §6.2).

``step``: 90 epochs, batch 256, lr 0.1, momentum 0.9, weight decay 1e-4, 5-epoch per-step
warm-up, x0.1 at epochs 30, 60 and 80. ``cos``: 180 epochs, lr 0.01, momentum 0.99, the same
warm-up, then 0.5 lr (1 + cos(pi (e - 5) / (E - 5))) per epoch.
"""

from configs.baselines.resnet50_imagenet import get_config as resnet50_config
from configs.dcff.common import dcff_section


def dcff_resnet50_config(rates: str, schedule: str):
    c = resnet50_config()
    c.method = "dcff"
    c.dcff = dcff_section(rates)
    c.keep_best_checkpoint = True
    if schedule == "cos":
        c.num_epochs = 180
        c.optimizer.learning_rate = 0.01
        c.optimizer.momentum = 0.99
        c.optimizer.schedule = "cosine_epoch"
    return c
