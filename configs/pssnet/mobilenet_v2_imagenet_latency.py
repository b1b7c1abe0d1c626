"""PSS-Net MobileNetV2 on ImageNet with pools keyed by latency on your own device (the -G/-C
variants of ../shared/papers/pssnet.md §4.1, with a table measured here instead of the
authors' LUTs). Build the table on the device that will run the subnets, then train:

    python launch.py --config=configs/pssnet/mobilenet_v2_imagenet_latency.py \\
        --mode=latency_table --config.latency.table=tables/mbv2_h100_b1.json
    python launch.py --config=configs/pssnet/mobilenet_v2_imagenet_latency.py --workdir=runs/l \\
        --config.latency.table=tables/mbv2_h100_b1.json \\
        --config.dataset.data_dir=<tfds data dir with imagenet2012>

16 pools (as the paper's -G runs) between the min and the max net's predicted latency.
"""

from configs.pssnet.imagenet import pssnet_imagenet_config


def get_config():
    c = pssnet_imagenet_config("mobilenet_v2", targets=(70.0, 300.0, 10.0))
    c.pssnet.constraints = ("latency",)
    c.latency.num_pools = 16
    return c
