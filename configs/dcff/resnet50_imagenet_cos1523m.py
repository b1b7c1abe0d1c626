"""DCFF ResNet-50 on ImageNet, cos schedule (../shared/papers/dcff.md §4.2, §6.2).

Compact model: 1522.96M FLOPs (thop), 11.0473M params; published 75.60 / 92.55 (top-1 / top-5).

    python launch.py --config=configs/dcff/resnet50_imagenet_cos1523m.py \\
        --workdir=runs/r50_cos1523m --config.dataset.data_dir=<tfds data dir with imagenet2012>
"""

from configs.dcff.imagenet import dcff_resnet50_config

RATES = "[0.0]+([0.5]*10+[0.5]*6)*2+[0.25]*3+[0.0]"


def get_config():
    return dcff_resnet50_config(RATES, "cos")
