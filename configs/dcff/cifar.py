"""DCFF on CIFAR-10 (../shared/papers/dcff.md §6.1): the baseline recipe plus fusion.

300 epochs, batch 256, SGD momentum 0.9, weight decay 5e-4 on all parameters, lr 0.1 x0.1 at
epochs 150 and 225; the temperature schedule runs over the same 300 epochs. The final state is
exported by default; the best-test-accuracy state (the official selection) is kept as well and
reported as ``best_eval_accuracy`` (export it with ``--config.export_from=best``).
"""

from configs.baselines.cifar import cifar_config
from configs.dcff.common import dcff_section


def dcff_cifar_config(model_name: str, rates: str):
    c = cifar_config(model_name)
    c.method = "dcff"
    c.dcff = dcff_section(rates)
    c.keep_best_checkpoint = True
    return c
