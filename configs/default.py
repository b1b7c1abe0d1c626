"""The embedded default run: ``python launch.py`` with no flags trains this into runs/default.

The PSS-Net MobileNetV2 supernet of configs/pssnet/embedded.py on the embedded
Fashion-MNIST subset (about 5 minutes on 2 CPU cores): the workdir ends with the max net's
summary, subnets.json (the kept subnet of every FLOPs target) and flops_accuracy.png.
"""

from configs.pssnet.embedded import get_config  # noqa: F401
