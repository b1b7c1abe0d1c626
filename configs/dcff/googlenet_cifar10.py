"""DCFF googlenet on CIFAR-10 with the README rate string (../shared/papers/dcff.md §4.2).

Compact model: 457.22M FLOPs (thop), 2.0793M params; published top-1 94.92% (best test epoch).

    python launch.py --config=configs/dcff/googlenet_cifar10.py --workdir=runs/dcff_googlenet
"""

from configs.dcff.cifar import dcff_cifar_config

# The rate string of the official README (its spaces dropped), wrapped.
RATES = (
    "[0.0]*2+[0.8]+[0.0]+[0.8]*2+[0.0]*2+([0.0]+[0.9]+[0.0]+[0.9]*2+[0.0]*2)*3+"
    "([0.0]+[0.8]+[0.0]+[0.8]*2+[0.0]*2)*3+([0.0]+[0.9]+[0.0]+[0.9]*2+[0.0]*2)*2")


def get_config():
    return dcff_cifar_config("googlenet", RATES)
