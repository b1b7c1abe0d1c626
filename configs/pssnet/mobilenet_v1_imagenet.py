"""PSS-Net MobileNetV1 supernet on ImageNet (FLOPs pools 120..560 M, 45 targets).

Max / min net: 568.79 / 106.78 MFLOPs. The uniform map reaches only 120..510 M; the paper has
pools up to 560 M, so the map adds 100,000 samples with multipliers biased towards 1.0
(``map_tilt``, pssnet_jax/sampler.py). Published: 74.1% at 568.8 M, 67.9% at 106.8 M.

    python launch.py --config=configs/pssnet/mobilenet_v1_imagenet.py --workdir=runs/mbv1 \\
        --config.dataset.data_dir=<tfds data dir with imagenet2012>
"""

from configs.pssnet.imagenet import pssnet_imagenet_config


def get_config():
    return pssnet_imagenet_config("mobilenet_v1", targets=(110.0, 570.0, 10.0),
                                  map_tilt=100_000)
