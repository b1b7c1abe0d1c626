"""DCFF ResNet-50 on ImageNet, cos schedule (../shared/papers/dcff.md §4.2, §6.2).

Compact model: 1380.92M FLOPs (thop), 11.8139M params; published 74.85 / 92.41 (top-1 / top-5).

    python launch.py --config=configs/dcff/resnet50_imagenet_cos1381m.py \\
        --workdir=runs/r50_cos1381m --config.dataset.data_dir=<tfds data dir with imagenet2012>
"""

from configs.dcff.imagenet import dcff_resnet50_config

RATES = "[0.0]+([0.7]*7+[0.45]*9)*2+[0.24]*3+[0.0]"


def get_config():
    return dcff_resnet50_config(RATES, "cos")
