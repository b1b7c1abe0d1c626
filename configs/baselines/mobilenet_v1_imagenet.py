"""Full-width mobilenet_v1 on ImageNet with the PSS-Net recipe (configs/baselines/mobilenet.py).

    python launch.py --config=configs/baselines/mobilenet_v1_imagenet.py --workdir=runs/mobilenet_v1
    python launch.py --config=configs/baselines/mobilenet_v1_imagenet.py --mode=profile
"""

from configs.baselines.mobilenet import mobilenet_config


def get_config():
    return mobilenet_config("mobilenet_v1")
