"""The embedded PSS-Net supernet's max net trained alone: the control of the recipe study.

The same network as the max net of configs/pssnet/embedded.py (the ImageNet MobileNetV2 at
width 1.0, 10 classes, one input channel: 5.60 MFLOPs at 28 px; not the baselines'
``small_input`` variant), the same 9,000 training images (1,000 held out), the same
optimizer, schedule, warm-up, batch size and epochs, trained as a plain network.

    python launch.py --config=configs/pssnet/embedded_alone.py --workdir=runs/pss_alone
"""

from configs.base import base_config
from configs.pssnet.embedded import get_config as supernet_config


def get_config():
    supernet = supernet_config()
    c = base_config()
    c.dataset = supernet.dataset
    c.model.name = supernet.model.name
    c.model.small_input = False
    for key in ("batch_size", "num_epochs", "log_every_steps", "optimizer"):
        c[key] = supernet[key]
    return c
