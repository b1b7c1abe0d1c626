"""DCFF ResNet-50 on ImageNet, cos schedule (../shared/papers/dcff.md §4.2, §6.2).

Compact model: 1023.26M FLOPs (thop), 6.5608M params; published 73.81 / 91.59 (top-1 / top-5).

    python launch.py --config=configs/dcff/resnet50_imagenet_cos1023m.py \\
        --workdir=runs/r50_cos1023m --config.dataset.data_dir=<tfds data dir with imagenet2012>
"""

from configs.dcff.imagenet import dcff_resnet50_config

RATES = "[0.0]+([0.43]*7+[0.73]*9)*2+[0.45]*3+[0.0]"


def get_config():
    return dcff_resnet50_config(RATES, "cos")
