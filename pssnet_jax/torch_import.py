"""An official PSS-Net checkpoint (``checkpoint_{epoch:03d}.pt`` of chenbong/PSS-Net) -> a
workdir of this project (``--mode=import``; ../shared/papers/pssnet.md §2, §5, §9).

The file is read by ``common_jax.torch_files`` (allowlisted, no torch). Its ``model`` entry is
the DataParallel state dict of the slimmable supernet, at full width:

- MobileNetV1: ``features.0.{0,1}`` stem conv + BN, ``features.{1..13}.{0,1,3,4}`` (depthwise
  conv, BN, pointwise conv, BN), ``classifier.0``;
- MobileNetV2: ``features.0.{0,1}``, ``features.{1..17}.body.{0,1,3,4[,6,7]}`` (expansion
  conv + BN when the block has one, depthwise conv + BN, projection conv + BN),
  ``features.18.{0,1}`` tail, ``classifier.0``;

every slimmable BN holding ``X.weight`` / ``X.bias`` and its statistics under ``X.bn``. The
tensors map to the masked supernet's parameters (``supernet.py``: convs OIHW -> HWIO, the
depthwise ``[C, 1, k, k]`` -> ``(k, k, 1, C)``, the linear layer transposed) and must have
the shapes of the config's supernet.

``arch_pools['pools']['flops']`` (``{target: {str(cfg): score}}``) becomes the FLOPs pools:
each key is parsed with ``ast.literal_eval`` (never ``eval``), its ``resolution`` and
``stage_cout_mults`` give the subnet by this project's rounding, and its FLOPs are counted
again. Merge rule: the official pools key on the float multipliers, so one subnet can hold
several entries; they become one entry with the highest of their scores, at the place of the
first. A member whose FLOPs fall in another target is dropped (reported), a pool beyond
``pssnet.pool_size`` keeps its best members. Latency pools (``latency_gpu``,
``latency_cpu``) are keyed on the authors' devices and are left out (logged). The optimizer
state is not imported: momentum starts at zero, the learning-rate schedule at the imported
step (``(last_epoch + 1)`` epochs of this config).
"""

from __future__ import annotations

import ast
import logging

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from common_jax import checkpoint, compilation_cache, files, mesh as mesh_lib, paths, storage
from common_jax import torch_files, train_state
from common_jax.loop import Loop
from common_jax.models import mobilenet
from common_jax.torch_import import ImportMismatch, Reader, cast, state_dict_of
from pssnet_jax import report, sampler, selection, supernet, switch
from pssnet_jax.host_state import HostState
from pssnet_jax.pools import Pools
from pssnet_jax.space import Space

log = logging.getLogger(__name__)
IMPORT_FILE = "import.json"


def official_units(arch: dict) -> list[tuple[str, str, str]]:
    """(conv prefix, BN prefix, parameter name) of every conv + BN unit of a supernet
    description in the official layout (the BN of a conv at ``P.{i}`` is ``P.{i + 1}``)."""
    v2 = arch["family"] == "mobilenet_v2"
    sequences = [("features.0", "stem", 0)]
    for i, block in enumerate(mobilenet.blocks(arch, supernet.ANY_SIZE)):
        base = f"features.{i + 1}" + (".body" if v2 else "")
        names = (["expand"] if block.expand else []) + ["dw", "pw"]
        sequences += [(base, f"{block.name}_{name}", 3 * j) for j, name in enumerate(names)]
    if arch.get("tail"):
        sequences.append((f"features.{len(arch['blocks']) + 1}", "tail", 0))
    return [(f"{base}.{i}", f"{base}.{i + 1}", name) for base, name, i in sequences]


def _version(state: dict) -> str | None:
    if any(".body." in key for key in state):
        return "mobilenet_v2"
    if "features.1.3.weight" in state and "classifier.0.weight" in state:
        return "mobilenet_v1"
    return None


def supernet_variables(state: dict, source: str, space: Space) -> dict:
    """The supernet's ``params`` / ``batch_stats`` (float32 NumPy) of an official state dict
    (``module.`` already removed); ImportMismatch for the other MobileNet version or a key
    that fits no layer."""
    version = _version(state)
    if version is None:
        raise ImportMismatch(f"{source}: key {next(iter(state))!r} fits no PSS-Net supernet "
                             f"layout (features.{{i}}... of MobileNetV1/V2, classifier.0)")
    if version != space.model:
        raise ImportMismatch(f"{source}: a PSS-Net {version} checkpoint, but config.model.name="
                             f"{space.model!r}; use the config of that version")
    reader, params, stats = Reader(state, source), {}, {}
    for conv, bn, name in official_units(space.full_arch):
        params[f"{name}_conv"] = reader.conv(conv)
        params[f"{name}_bn"], stats[f"{name}_bn"] = reader.bn(bn, bn + ".bn")
    params["fc"] = reader.linear("classifier.0")
    reader.finish()
    return {"params": cast(params), "batch_stats": cast(stats)}


def official_keys(arch: dict) -> dict:
    """Our flat variable key ('params/stem_conv/kernel') -> the official state-dict key."""
    keys = {"params/fc/kernel": "classifier.0.weight", "params/fc/bias": "classifier.0.bias"}
    for conv, bn, name in official_units(arch):
        keys.update({f"params/{name}_conv/kernel": conv + ".weight",
                     f"params/{name}_bn/scale": bn + ".weight",
                     f"params/{name}_bn/bias": bn + ".bias",
                     f"batch_stats/{name}_bn/mean": bn + ".bn.running_mean",
                     f"batch_stats/{name}_bn/var": bn + ".bn.running_var"})
    return keys


def _torch_shape(shape: tuple) -> tuple:
    """A shape of this project's layout in PyTorch's (HWIO -> OIHW, (in, out) -> (out, in))."""
    if len(shape) == 4:
        return shape[3], shape[2], shape[0], shape[1]
    return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def check_shapes(variables: dict, abstract: dict, arch: dict, source: str) -> None:
    """ImportMismatch naming the first tensor of the file whose shape is not the one the
    config's supernet needs."""
    names = official_keys(arch)
    for collection in ("params", "batch_stats"):
        want = traverse_util.flatten_dict(abstract[collection], sep="/")
        for key, value in traverse_util.flatten_dict(variables[collection], sep="/").items():
            if tuple(value.shape) != tuple(want[key].shape):
                raise ImportMismatch(
                    f"{source}: {names[f'{collection}/{key}']} has shape "
                    f"{_torch_shape(value.shape)}, the config's supernet needs "
                    f"{_torch_shape(want[key].shape)} (config.model.width_mult and the "
                    f"dataset's classes and channels set it)")


def _parse_member(text, source: str) -> tuple[int, list, dict]:
    """(resolution, multipliers, the whole dict) of one official pool key (``str(cfg)``)."""
    try:
        cfg = ast.literal_eval(text) if isinstance(text, str) else None
    except (ValueError, SyntaxError):
        cfg = None
    if not isinstance(cfg, dict) or "resolution" not in cfg or "stage_cout_mults" not in cfg:
        raise ImportMismatch(f"{source}: pool key {str(text)[:80]!r} is not a subnet config "
                             f"(a dict literal with resolution and stage_cout_mults)")
    return int(cfg["resolution"]), [float(m) for m in cfg["stage_cout_mults"]], cfg


def flops_pools(arch_pools: dict, space: Space, grid: tuple, targets: tuple, pool_size: int,
                ema: float, source: str) -> tuple[Pools, dict]:
    """(FLOPs pools, report) of the file's ``arch_pools`` under the merge rule of the module
    docstring; ``grid`` = ``pssnet.targets`` (start, stop, step), ``targets`` = the plan's."""
    pools, start, step = Pools(targets, pool_size, ema), grid[0], grid[2]
    found = (arch_pools.get("pools") or {}).get("flops") or {}
    counts = {"pools_in_file": len(found), "members_in_file": 0, "merged": 0,
              "off_target": 0, "outside_space": 0, "evicted": 0, "targets_dropped": [],
              "max_flops_difference_m": 0.0}
    for target, members in found.items():
        target = float(np.round(float(target), 6))
        counts["members_in_file"] += len(members)
        if target not in pools.entries:
            counts["targets_dropped"].append(target)
            continue
        merged: dict = {}
        for text, score in members.items():
            resolution, mults, cfg = _parse_member(text, source)
            try:
                subnet = space.subnet(resolution, mults)
            except ValueError:
                counts["outside_space"] += 1
                continue
            flops_m = report.costs(space, subnet)["flops"] / 1e6
            if isinstance(cfg.get("infer_metric"), (int, float)):
                counts["max_flops_difference_m"] = max(counts["max_flops_difference_m"],
                                                       abs(flops_m - cfg["infer_metric"]))
            if float(sampler.target_of(flops_m, start, step)) != target:
                counts["off_target"] += 1
                continue
            counts["merged"] += subnet in merged
            merged[subnet] = max(float(score), merged.get(subnet, -np.inf))
        kept = {s for s, _ in sorted(merged.items(), key=lambda item: -item[1])[:pool_size]}
        counts["evicted"] += len(merged) - len(kept)
        pools.entries[target] = {s: v for s, v in merged.items() if s in kept}
    counts["kept"] = len(pools)
    return pools, counts


def _dropped_pool_types(arch_pools: dict) -> dict:
    """Pool types other than FLOPs in the file -> their number of targets (left out)."""
    return {kind: len(pools) for kind, pools in (arch_pools.get("pools") or {}).items()
            if kind != "flops"}


def _train_state(pss, variables: dict, step: int) -> dict:
    """The train state of imported weights: a fresh optimizer whose schedule count is
    ``step`` (momentum zero), the rng of a fresh run of the config."""
    params = jax.tree.map(jnp.asarray, variables["params"])
    opt_state = pss.run.tx.init(params)
    opt_state = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.full_like(leaf, step) if getattr(path[-1], "name", "") ==
        "count" else leaf, opt_state)
    _, train_key = train_state.seed_keys(pss.config.seed)
    state = {"step": jnp.asarray(step, jnp.int32), "params": params,
             "batch_stats": jax.tree.map(jnp.asarray, variables["batch_stats"]),
             "opt_state": opt_state, "rng": jax.random.key_data(train_key)}
    return jax.device_put(state, mesh_lib.replicated(pss.run.mesh))


def unselected_subnets(pss, host: HostState, source: str) -> dict:
    """The ``subnets.json`` document right after an import: each target's top-scored pool
    member, marked as not yet selected on held-out data (``--mode=eval`` selects)."""
    none = {"accuracy": None, "loss": None}
    kept = []
    for constraint in pss.plan.constraints:
        for target in pss.plan.maps[constraint.name].targets:
            ranked = host.pools[constraint.name].ranked(target)
            if ranked:
                kept.append(selection.entry_of(pss, ranked[0][0], target=target,
                                               constraint=constraint.name, score=ranked[0][1],
                                               rank=1, test=none))
    ends = {name: selection.entry_of(pss, subnet, target=name, test=none)
            for name, subnet in (("max", pss.max_subnet), ("min", pss.min_subnet))}
    document = report.document(pss.config, pss.space, kept, ends, pss.plan.constraints)
    return dict(document, selected=False, imported_from=source)


def import_checkpoint(pss, source: str, workdir: str) -> dict:
    """Writes ``workdir`` from the official checkpoint ``source``: a checkpoint at the
    imported step with the FLOPs pools, ``subnets.json`` (unselected) and ``import.json``
    (what was read, merged and left out); returns the import report."""
    if storage.retry(lambda: paths.isdir(checkpoint.checkpoint_dir(workdir)),
                     f"list {workdir}"):
        raise ValueError(f"--workdir={workdir!r} already holds {checkpoint.CHECKPOINTS}/; "
                         f"import into a new --workdir (nothing was changed)")
    loaded = torch_files.load(source)
    arch_pools = loaded.get("arch_pools") if isinstance(loaded, dict) else None
    variables = supernet_variables(state_dict_of(loaded, source), source, pss.space)
    abstract = train_state.abstract_state(pss.run, pss.init())
    check_shapes(variables, abstract, pss.space.full_arch, source)
    cfg, host = pss.config.pssnet, pss.fresh_host_state()
    counts, dropped = {}, {}
    if isinstance(arch_pools, dict):
        host.pools["flops"], counts = flops_pools(arch_pools, pss.space, tuple(cfg.targets),
                                                  pss.plan.targets()["flops"], cfg.pool_size,
                                                  cfg.ema, source)
        dropped = _dropped_pool_types(arch_pools)
    last_epoch = loaded.get("last_epoch") if isinstance(loaded, dict) else None
    epochs = int(last_epoch) + 1 if isinstance(last_epoch, (int, np.integer)) else 0
    step = min(epochs * pss.run.steps_per_epoch, pss.run.total_steps)
    storage.check_writable(workdir)  # only now: a file that does not fit creates nothing
    with compilation_cache.CompileStats() as compiles:
        loop = Loop(pss.run, workdir, compiles, step)
        loop.restore(abstract)
        loop.step = step
        loop.save(_train_state(pss, variables, step), host.to_json())
        loop.flush()
    files.write_json(paths.join(workdir, switch.SUBNETS_FILE),
                     unselected_subnets(pss, host, str(source)))
    result = {"imported_from": str(source), "model": pss.space.model, "epochs_done": epochs,
              "step": step, "flops_pools": counts, "pool_types_left_out": dropped,
              "optimizer": "not imported: momentum starts at zero, the schedule at step"}
    files.write_json(paths.join(workdir, IMPORT_FILE), result)
    _log_import(result)
    return result


def _log_import(result: dict) -> None:
    counts = result["flops_pools"]
    log.info("imported %s (%d epochs done) as step %d", result["imported_from"],
             result["epochs_done"], result["step"])
    if counts:
        log.info("FLOPs pools: %d of %d members kept (%d duplicates merged, %d in another "
                 "target, %d outside the structure space, %d beyond the pool size); targets "
                 "without a pool here: %s; largest FLOPs difference to the file %.4f M",
                 counts["kept"], counts["members_in_file"], counts["merged"],
                 counts["off_target"], counts["outside_space"], counts["evicted"],
                 counts["targets_dropped"] or "none", counts["max_flops_difference_m"])
    for kind, number in result["pool_types_left_out"].items():
        log.warning("left out the %d %s pools: they are keyed on latencies measured on the "
                    "authors' hardware, which this device's latency table cannot reproduce",
                    number, kind)
