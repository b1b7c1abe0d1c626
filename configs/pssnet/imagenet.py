"""PSS-Net on ImageNet (../shared/papers/pssnet.md §8): the baseline MobileNet recipe plus
the supernet rules.

250 epochs, global batch 1024 with BN statistics per 256 images (ghost BN, as the original
4-GPU runs), Nesterov SGD lr 0.3 with per-step cosine decay, weight decay 1e-4 on conv
kernels with more than one input channel per group and the classifier only, random-resized
crop 0.25-1, colour jitter 0.4, flip; resolutions 128..224 step 8; pools of 50 on a 10 MFLOPs
grid; p_e and t_e from 1 to 0.01; BN recalibration over 9 batches; the top 5 of every pool
are compared on 10,000 held-out training images.
"""

from configs.baselines.mobilenet import mobilenet_config
from configs.pssnet.common import export_section, latency_section, pssnet_section


def pssnet_imagenet_config(model_name: str, targets, map_tilt: int = 0):
    c = mobilenet_config(model_name)
    c.method = "pssnet"
    c.pssnet = pssnet_section(resolutions=(128, 224, 8), targets=targets)
    c.pssnet.bn_group_size = 256
    c.pssnet.map_tilt = map_tilt
    c.dataset.holdout_examples = 10_000
    c.export = export_section()
    c.latency = latency_section()
    return c
