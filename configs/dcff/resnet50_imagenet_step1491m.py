"""DCFF ResNet-50 on ImageNet, step schedule (../shared/papers/dcff.md §4.2, §6.2).

Compact model: 1490.51M FLOPs (thop), 10.5816M params; published 74.21 / 91.93 (top-1 / top-5).

    python launch.py --config=configs/dcff/resnet50_imagenet_step1491m.py \\
        --workdir=runs/r50_step1491m --config.dataset.data_dir=<tfds data dir with imagenet2012>
"""

from configs.dcff.imagenet import dcff_resnet50_config

RATES = "[0.0]+[0.6]*10+[0.5]*6+[0.5]*10+[0.4]*6+[0.2]*4"


def get_config():
    return dcff_resnet50_config(RATES, "step")
