"""DCFF on the embedded Fashion-MNIST subset: a compact ResNet-20 in a few CPU minutes.

Conv1 of every block keeps half its filters and the residual widths keep three quarters
(``[0.5]*9+[0.25]*3``: 11.6 of the baseline's 30.8 MFLOPs at 28x28, -62%), trained from
scratch with filter fusion under the recipe of configs/baselines/embedded.py (10 epochs; the
temperature goes from 1 to 1e4 over those 10). ``:stable`` or ``:scratch`` picks the other
modes. About 2 minutes on 2 CPU cores.

    python launch.py --config=configs/dcff/embedded.py --workdir=runs/dcff_embedded
"""

from configs.baselines.embedded import get_config as baseline_config
from configs.dcff.common import dcff_section

RATES = "[0.5]*9+[0.25]*3"


def get_config(mode: str = "faithful"):
    c = baseline_config("resnet20")
    c.method = "dcff"
    c.dcff = dcff_section(RATES, mode)
    c.keep_best_checkpoint = True
    return c
