"""DCFF resnet110 on CIFAR-10 with the README rate string (../shared/papers/dcff.md §4.2).

Compact model: 85.30M FLOPs (thop), 0.5554M params; published top-1 93.80% (best test epoch).

    python launch.py --config=configs/dcff/resnet110_cifar10.py --workdir=runs/dcff_resnet110
"""

from configs.dcff.cifar import dcff_cifar_config

# The rate string of the official README (its spaces dropped), wrapped.
RATES = (
    "[0.2]+[0.0]+[0.2]+[0.3]+[0.7]*2+[0.1]+[0.3]*2+[0.4]+[0.7]*2+[0.5]+[0.1]+[0.3]+"
    "[0.0]+[0.6]+[0.0]+[0.2]+[0.5]+[0.0]+[0.7]*2+[0.5]+[0.7]*2+[0.4]*2+[0.0]+[0.3]+"
    "[0.1]+[0.5]+[0.1]*3+[0.7]+[0.1]*2+[0.3]*5+[0.5]+[0.7]+[0.2]+[0.4]+[0.7]*5+[0.5]+"
    "[0.1]+[0.6]+[0.2]+[0.5]")


def get_config():
    return dcff_cifar_config("resnet110", RATES)
