"""PSS-Net MobileNetV2 on ImageNet with pools keyed by FLOPs and by latency on your own device
at once (the -M variant, ../shared/papers/pssnet.md §4.1, §7 step 2: each step draws the
constraint with probability proportional to its number of pools). Same commands as
configs/pssnet/mobilenet_v2_imagenet_latency.py with this file.
"""

from configs.pssnet.mobilenet_v2_imagenet_latency import get_config as latency_config


def get_config():
    c = latency_config()
    c.pssnet.constraints = ("flops", "latency")
    return c
