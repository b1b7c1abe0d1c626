"""PSS-Net with a ResNet supernet on the embedded Fashion-MNIST subset (issue #29 part 2).

The CIFAR ResNet-20 (10 classes, one input channel) as a supernet: 12 width groups (the
three stages' residual widths, the stem joining the first, and every block's inner width),
multipliers in [0.5, 1.0], resolutions 16..28 step 4: 30.82 MFLOPs max net at 28 px,
2.53 MFLOPs min net at 16 px (``--mode=profile`` prints both). FLOPs targets 4..28 on a
4 MFLOPs grid; everything else is the main job's recipe (configs/pssnet/embedded.py).

    python launch.py --config=configs/pssnet/embedded_resnet.py --workdir=runs/pss_resnet
"""

from configs.pssnet.embedded import get_config as mobilenet_config


def get_config():
    c = mobilenet_config()
    c.model.name = "resnet20"
    c.pssnet.mult_range = (0.5, 1.0)
    c.pssnet.targets = (4.0, 28.0, 4.0)
    return c
