"""The embedded default run: ``python launch.py`` with no flags trains this into runs/default.

Currently the ResNet-20 baseline of configs/baselines/embedded.py on the embedded
Fashion-MNIST subset (about 4 minutes on 2 CPU cores).
"""

from configs.baselines.embedded import get_config  # noqa: F401
