"""The DCFF config section (plain ml_collections; reading a config imports no JAX)."""

import ml_collections


def dcff_section(rates: str, mode: str = "faithful") -> ml_collections.ConfigDict:
    """``config.dcff``: the rate string, the mode and the temperature schedule (§2.2)."""
    return ml_collections.ConfigDict({
        "rates": rates, "mode": mode, "t_start": 1.0, "t_end": 1e4, "k": 1.0,
        # 'epoch': T(e) of this run's epochs, recomputed every epoch (the official schedule);
        # 'progress': T of the fraction of steps done times paper_epochs, recomputed every
        # update_every_steps steps, so a short run keeps the paper's soft-phase share.
        "schedule": "epoch", "paper_epochs": 300, "update_every_steps": 10})
