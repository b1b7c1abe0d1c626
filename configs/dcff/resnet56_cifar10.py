"""DCFF resnet56 on CIFAR-10 with the README rate string (../shared/papers/dcff.md §4.2).

Compact model: 55.84M FLOPs (thop), 0.3843M params; published top-1 93.26% (best test epoch).

    python launch.py --config=configs/dcff/resnet56_cifar10.py --workdir=runs/dcff_resnet56
"""

from configs.dcff.cifar import dcff_cifar_config

# The rate string of the official README (its spaces dropped), wrapped.
RATES = (
    "[0.7]*2+[0.5]*3+[0.3]*2+[0.4]+[0.8]+[0.7]*2+[0.8]*4+[0.4]+[0.2]*2+[0.7]+[0.3]+"
    "[0.8]+[0.4]*2+[0.7]+[0.3]+[0.4]+[0.8]+[0.0]*3")


def get_config():
    return dcff_cifar_config("resnet56", RATES)
