"""DCFF ResNet-50 on ImageNet, step schedule (../shared/papers/dcff.md §4.2, §6.2).

Compact model: 958.07M FLOPs (thop), 7.4034M params; published 71.54 / 90.57 (top-1 / top-5).

    python launch.py --config=configs/dcff/resnet50_imagenet_step958m.py \\
        --workdir=runs/r50_step958m --config.dataset.data_dir=<tfds data dir with imagenet2012>
"""

from configs.dcff.imagenet import dcff_resnet50_config

RATES = "[0.0]+[0.8]*10+[0.7]*6+[0.6]*10+[0.4]*6+[0.3]*4"


def get_config():
    return dcff_resnet50_config(RATES, "step")
