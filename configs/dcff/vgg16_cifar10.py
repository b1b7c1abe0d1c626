"""DCFF vgg16 on CIFAR-10 with the README rate string (../shared/papers/dcff.md §4.2).

Compact model: 72.77M FLOPs (thop), 1.0712M params; published top-1 93.47% (best test epoch).

    python launch.py --config=configs/dcff/vgg16_cifar10.py --workdir=runs/dcff_vgg16
"""

from configs.dcff.cifar import dcff_cifar_config

# The rate string of the official README (its spaces dropped), wrapped.
RATES = (
    "[0.5]*2+[0.4]*2+[0.35]*3+[0.85]*6")


def get_config():
    return dcff_cifar_config("vgg16", RATES)
