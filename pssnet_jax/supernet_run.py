"""What a PSS-Net config resolves to: the common ``Run`` plus the structure space, the masked
supernet, its compiled step and evaluation functions, the latency table and the sampling plan.

Subnet evaluation (../shared/papers/pssnet.md §9) always recalibrates BN first: the shared
statistics are meaningless for any one subnet.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from common_jax import data, mesh as mesh_lib, models, train_state
from common_jax import run as run_lib
from pssnet_jax import constraints as constraints_lib, report, supernet
from pssnet_jax.draw import SamplingPlan, plan_for
from pssnet_jax.evaluation import SubnetEvaluator
from pssnet_jax.host_state import HostState
from pssnet_jax.space import Space, Subnet, space_from_config
from pssnet_jax.step import StepFunctions


@dataclasses.dataclass
class SupernetRun:
    config: ml_collections.ConfigDict
    run: run_lib.Run
    space: Space
    model: supernet.MaskedSupernet
    fns: StepFunctions
    evaluator: SubnetEvaluator
    latency_table: dict | None
    plan: SamplingPlan

    @property
    def max_subnet(self) -> Subnet:
        return self.space.max_subnet()

    @property
    def min_subnet(self) -> Subnet:
        return self.space.min_subnet()

    def init(self):
        """init(seed) -> train state of the supernet (built at the max net's widths)."""
        return train_state.make_init(self.run, self.model, init_args=(
            supernet.widths_of(self.space.full_arch), self.space.resolutions[-1]))

    def fresh_host_state(self) -> HostState:
        """Empty pools for the plan's targets and the sampling generator of the seed."""
        cfg = self.config.pssnet
        return HostState.fresh(self.plan.targets(), cfg.pool_size, cfg.ema, self.config.seed)

    def costs(self) -> dict:
        """The max net's analytic costs plus ``min_flops``."""
        return {**models.model_costs(self.space.full_arch, self.run.input.image_size),
                "min_flops": report.costs(self.space, self.min_subnet)["flops"]}

    def widths(self, subnet: Subnet):
        """A subnet's active-channel arrays, replicated over the mesh (the step's input;
        no cross-host check, so the host can dispatch ahead on several processes)."""
        return mesh_lib.replicated_host_value(supernet.widths_of(self.space.arch(subnet)),
                                              self.run.mesh)

    def recalibrated_stats(self, state, subnet: Subnet):
        """The subnet's BN statistics recalibrated on training batches."""
        return self.evaluator.recalibrate(state["params"], state["batch_stats"],
                                          self.widths(subnet), subnet.resolution)

    def subnet_results(self, state, subnet: Subnet, stats, split: str) -> dict:
        """{"loss", "accuracy"} of a subnet with ``stats`` on ``split``: 'holdout' (held-out
        training images) or 'eval' (the eval split)."""
        inputs = self.run.input
        batches = inputs.holdout_batches() if split == "holdout" else inputs.eval_batches()
        return self.evaluator.loss_and_accuracy(state["params"], stats, self.widths(subnet),
                                                subnet.resolution, batches)

    def max_net_eval(self, state) -> dict:
        """{"eval_loss", "eval_accuracy"} of the max net after BN recalibration."""
        stats = self.recalibrated_stats(state, self.max_subnet)
        result = self.subnet_results(state, self.max_subnet, stats, "eval")
        return {"eval_loss": result["loss"], "eval_accuracy": result["accuracy"]}


def setup(config: ml_collections.ConfigDict, workdir: str | None = None) -> SupernetRun:
    """Builds everything of a PSS-Net run (in ``workdir``, see ``run_lib.setup``); compiles
    nothing."""
    info = data.dataset_info(config.dataset.name)
    space = space_from_config(config, info)
    run = run_lib.setup(config, space.full_arch, workdir)
    supernet.check_ghost_bn(config.pssnet.bn_group_size, config.batch_size, jax.device_count())
    model = supernet.build_supernet(space.full_arch, models.DTYPES[config.compute_dtype],
                                    config.model.depthwise_impl, config.pssnet.bn_group_size)
    fns = StepFunctions(model, run.tx, run.schedule, info, models.DTYPES[config.compute_dtype],
                        space.resolutions[-1], run.mesh)
    evaluator = SubnetEvaluator(fns, run.mesh, config.pssnet.recal_batches,
                                run.input.train_batches)
    table = constraints_lib.latency_table_of(config, space)
    return SupernetRun(config, run, space, model, fns, evaluator, table,
                       plan_for(config, space, table))
