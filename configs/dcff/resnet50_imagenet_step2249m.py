"""DCFF ResNet-50 on ImageNet, step schedule (../shared/papers/dcff.md §4.2, §6.2).

Compact model: 2248.78M FLOPs (thop), 15.1636M params; published 75.18 / 92.56 (top-1 / top-5).

    python launch.py --config=configs/dcff/resnet50_imagenet_step2249m.py \\
        --workdir=runs/r50_step2249m --config.dataset.data_dir=<tfds data dir with imagenet2012>
"""

from configs.dcff.imagenet import dcff_resnet50_config

RATES = "[0.0]+[0.35]*10+[0.3]*6+[0.4]*10+[0.3]*6+[0.1]*4"


def get_config():
    return dcff_resnet50_config(RATES, "step")
