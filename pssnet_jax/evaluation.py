"""BN recalibration and evaluation of single subnets (../shared/papers/pssnet.md §9).

The supernet's shared BN statistics are meaningless for any one subnet, so every subnet is
evaluated after recalibration: statistics reset (mean 0, variance 1), then a cumulative
average (momentum t / (t + 1) at batch t) over ``K`` training batches with training
augmentation, forwarded in train mode; then evaluation with those statistics in eval mode.
The recalibration batches are the first K batches of the (seeded) training stream, the same
for every subnet. Variances are the biased batch variances (flax), where PyTorch averages
unbiased ones: a factor n / (n - 1), 1.0004 at 2,304 images.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from common_jax import evaluation, mesh as mesh_lib
from pssnet_jax.step import StepFunctions


class SubnetEvaluator:
    """Recalibrates and evaluates subnets of one supernet (compiled once per resolution)."""

    def __init__(self, fns: StepFunctions, mesh, recal_batches: int, train_batches):
        self.fns, self.mesh, self.recal_batches = fns, mesh, recal_batches
        self._train_batches = train_batches  # start step -> iterator of host batches
        self._recal_data = None

    def _recal_stream(self):
        if self._recal_data is None:
            host = list(itertools.islice(self._train_batches(0), self.recal_batches))
            self._recal_data = [mesh_lib.global_batch(b, self.mesh) for b in host]
        return self._recal_data

    def _bn_step(self, params, stats, batch, widths, momentum, resolution):
        _, updates = self.fns.model.apply(
            {"params": params, "batch_stats": stats}, self.fns.images(batch), widths,
            resolution, train=True, bn_momentum=momentum, mutable=["batch_stats"])
        return updates["batch_stats"]

    def _eval_sums(self, params, stats, batch, widths, resolution):
        logits = self.fns.model.apply({"params": params, "batch_stats": stats},
                                      self.fns.images(batch), widths, resolution, train=False)
        return evaluation.batch_sums(logits, batch)

    def bn_program(self, resolution: int, args):
        """One recalibration batch at ``resolution`` (compiled once per resolution)."""
        rep = self.fns.replicated
        return self.fns.compiled.get("bn recalibration",
                                     lambda *a, r=resolution: self._bn_step(*a, r), args,
                                     (resolution,),
                                     shardings=((rep, rep, self.fns.sharded, rep, rep), rep))

    def eval_program(self, resolution: int, args):
        """One evaluation batch's sums at ``resolution`` (compiled once per resolution)."""
        rep = self.fns.replicated
        return self.fns.compiled.get("subnet eval",
                                     lambda *a, r=resolution: self._eval_sums(*a, r), args,
                                     (resolution,),
                                     shardings=((rep, rep, self.fns.sharded, rep), rep))

    def recal_batch(self):
        """The first recalibration batch (on the devices)."""
        return self._recal_stream()[0]

    @staticmethod
    def initial_stats(stats_like):
        """Reset BN statistics (mean 0, variance 1) shaped like ``stats_like``."""
        return jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.ones_like(x) if path[-1].key == "var" else jnp.zeros_like(x),
            stats_like)

    def recalibrate(self, params, stats_like, widths, resolution):
        """BN statistics of one subnet: the cumulative average over the recal batches."""
        stats = self.initial_stats(stats_like)
        for t, batch in enumerate(self._recal_stream()):
            args = (params, stats, batch, widths, np.float32(t / (t + 1)))
            stats = self.bn_program(resolution, args)(*args)
        return stats

    def loss_and_accuracy(self, params, stats, widths, resolution, batches) -> dict:
        """Loss and accuracy of a subnet with the given statistics over host ``batches``."""
        def sums():
            for host_batch in batches:
                args = (params, stats, mesh_lib.global_batch(host_batch, self.mesh), widths)
                yield self.eval_program(resolution, args)(*args)
        return evaluation.accumulate(sums())
