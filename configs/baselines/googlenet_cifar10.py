"""Full-width googlenet on CIFAR-10 with the DCFF recipe (configs/baselines/cifar.py).

    python launch.py --config=configs/baselines/googlenet_cifar10.py --workdir=runs/googlenet
    python launch.py --config=configs/baselines/googlenet_cifar10.py --mode=profile
"""

from configs.baselines.cifar import cifar_config


def get_config():
    return cifar_config("googlenet")
