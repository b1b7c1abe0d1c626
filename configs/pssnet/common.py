"""The PSS-Net config sections (plain ml_collections; reading a config imports no JAX)."""

import ml_collections

from configs.base import export_options


def pssnet_section(resolutions=(128, 224, 8), targets=(70.0, 300.0, 10.0)):
    """``config.pssnet``: the structure space, the targets and the pool/sampling rules."""
    return ml_collections.ConfigDict({
        "resolutions": tuple(resolutions),  # (lowest, highest, step); highest = crop size
        "mult_range": (0.75, 1.0),
        "targets": tuple(targets),  # (start, stop, step) in MFLOPs; pools strictly inside
        "map_samples": 100_000,
        "map_tilt": 0,  # extra map samples with multipliers biased towards 1 (sampler.py)
        "pool_size": 50,
        "ema": 0.9,
        "p_range": (1.0, 0.01),  # structure-space sampling probability, epoch 0 -> E
        "t_range": (1.0, 0.01),  # pool softmax temperature, epoch 0 -> E
        "sync_pools": False,
        "step_mode": "split",
        "constraints": ("flops",),  # pool keys: 'flops', 'latency' or both (the -M variant)
        "sampling": "prioritized",  # or 'uniform': the US-Net sandwich control
        "bn_group_size": 0,  # ghost-BN group; 0 = statistics over the whole global batch
        "recal_batches": 9,
        "topk": 5,
        "selection": "holdout"})


def export_section(flops: float = 0.0, latency_ms: float = 0.0):
    """``config.export`` with the budget of ``--mode=export``, FLOPs (MFLOPs) or predicted
    latency (ms, needs ``latency.table``); both 0 = the max net. ``all=True`` exports the
    ladder of every kept subnet instead (pssnet_jax/ladder.py), ``subnet`` one named subnet
    of the structure space."""
    return export_options(flops=flops, latency_ms=latency_ms,
                          # the ladder's measured onnxruntime latency (format 'onnx')
                          latency_runs=30, latency_batches=(1, 32),
                          # False: the checkpoint's stored BN statistics (exact only for the
                          # subnet they were computed for), no recalibration
                          recalibrate=True,
                          # '{"resolution": R, "channels": [...]}': export this one subnet
                          subnet="")


def latency_section(table: str = "", targets=(0.0, 0.0, 0.0)):
    """``config.latency``: the latency table (``--mode=latency_table`` builds it) and the
    latency pools' targets (start, stop, step) in ms; zeros place ``num_pools`` targets
    between the min and max net's predicted latency (pssnet_jax/constraints.py)."""
    return ml_collections.ConfigDict({
        "table": table, "targets": tuple(targets), "num_pools": 8,
        "batch_size": 1, "repeats": 30, "max_units": 3000, "calibration_subnets": 10})
