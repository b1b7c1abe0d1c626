"""PSS-Net MobileNetV2 supernet on ImageNet (FLOPs pools 80..290 M, 22 targets).

Max / min net: 300.84 / 69.15 MFLOPs. Published curve (pssnet.md §10.2): 73.4% at 300.8 M,
70.7% at 154.1 M, 66.4% at 69.2 M.

    python launch.py --config=configs/pssnet/mobilenet_v2_imagenet.py --workdir=runs/mbv2 \\
        --config.dataset.data_dir=<tfds data dir with imagenet2012>
    python launch.py --config=configs/pssnet/mobilenet_v2_imagenet.py --workdir=runs/mbv2 \\
        --mode=export --config.export.flops=150
"""

from configs.pssnet.imagenet import pssnet_imagenet_config


def get_config():
    return pssnet_imagenet_config("mobilenet_v2", targets=(70.0, 300.0, 10.0))
