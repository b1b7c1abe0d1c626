"""PSS-Net ResNet-50 supernet on ImageNet (issue #29 part 2): the PSS-Net ImageNet recipe
(configs/pssnet/imagenet.py) on a ResNet-50 whose 21 width groups are the stem, the four
stages' output widths and every block's bottleneck width, multipliers in [0.65, 1.0] (the
narrowest width of Once-for-All's ResNet-50 space), resolutions 128..224 step 8.

Max net: the baseline ResNet-50, 4,089.28 MFLOPs / 25.557 M params at 224 px; min net
565.62 MFLOPs at 128 px (``--mode=profile`` prints both). FLOPs targets 600..4,000 on a
200 MFLOPs grid.

    python launch.py --config=configs/pssnet/resnet50_imagenet.py --workdir=runs/r50_pss \\
        --config.dataset.data_dir=<tfds data dir with imagenet2012>
"""

from configs.pssnet.imagenet import pssnet_imagenet_config


def get_config():
    c = pssnet_imagenet_config("resnet50", targets=(600.0, 4000.0, 200.0))
    c.pssnet.mult_range = (0.65, 1.0)
    return c
