"""The end of PSS-Net training (../shared/papers/pssnet.md §9): keep the best subnet of every
pool, write ``subnets.json`` and the FLOPs- (and latency-) accuracy plots.

Every pool's top ``topk`` subnets by score are BN-recalibrated and evaluated on a held-out
slice of the training split (``selection='holdout'``; 'rank1' keeps the top subnet without
evaluation, 'official' evaluates on the test split as the official code does); the best is
kept and its test accuracy reported.
"""

from __future__ import annotations

import logging

import jax

from common_jax import files, paths
from pssnet_jax import latency, report, switch
from pssnet_jax.host_state import HostState
from pssnet_jax.supernet_run import SupernetRun

log = logging.getLogger(__name__)
SELECTION_SPLITS = {"holdout": "holdout", "official": "eval", "rank1": None}


def _judged(pss: SupernetRun, state, subnet, split):
    """(BN statistics, accuracy on the selection split or None without one)."""
    stats = pss.recalibrated_stats(state, subnet)
    accuracy = split and pss.subnet_results(state, subnet, stats, split)["accuracy"]
    return stats, accuracy


def entry_of(pss: SupernetRun, subnet, **kwargs) -> dict:
    """The subnets.json entry of a subnet (``report.entry``, with its predicted latency when
    the run has a latency table)."""
    table = pss.latency_table
    latency_ms = table and latency.predict_subnet_ms(table, pss.space, subnet)
    return report.entry(pss.space, subnet, latency_ms=latency_ms, **kwargs)


def best_of_pool(pss: SupernetRun, state, ranked: list, split) -> tuple | None:
    """(subnet, score, rank, selection accuracy, stats) of the best of a pool's ranked
    (subnet, score) list: the first of the top ``topk`` with the highest selection accuracy
    (the top one without a selection split); None for an empty pool."""
    best = None
    for rank, (subnet, score) in enumerate(ranked[:pss.config.pssnet.topk if split else 1], 1):
        stats, accuracy = _judged(pss, state, subnet, split)
        if best is None or (accuracy is not None and accuracy > best[3]):
            best = (subnet, score, rank, accuracy, stats)
    return best


def select_and_report(pss: SupernetRun, host: HostState, state, workdir: str) -> dict:
    """Selects the kept subnet of every pool; writes subnets.json and the plot(s); returns
    the summary entries (min net FLOPs and accuracy, number of kept subnets)."""
    split = SELECTION_SPLITS[pss.config.pssnet.selection]
    kept = []
    for constraint in pss.plan.constraints:
        for target in pss.plan.maps[constraint.name].targets:
            best = best_of_pool(pss, state, host.pools[constraint.name].ranked(target), split)
            if best is None:
                continue
            subnet, score, rank, accuracy, stats = best
            test = pss.subnet_results(state, subnet, stats, "eval")
            kept.append(entry_of(pss, subnet, target=target, constraint=constraint.name,
                               score=score, rank=rank, selection_accuracy=accuracy, test=test))
            log.info("%s target %g %s: kept %s at %d px (%.2f MFLOPs, rank %d), test "
                     "accuracy %.4f", constraint.name, target, constraint.unit,
                     subnet.channels, subnet.resolution, kept[-1]["flops"] / 1e6, rank,
                     test["accuracy"])
    ends = {}
    for name, subnet in (("max", pss.max_subnet), ("min", pss.min_subnet)):
        stats, accuracy = _judged(pss, state, subnet, split)
        test = pss.subnet_results(state, subnet, stats, "eval")
        ends[name] = entry_of(pss, subnet, target=name, test=test, selection_accuracy=accuracy)
    document = report.document(pss.config, pss.space, kept, ends, pss.plan.constraints)
    files.write_json(paths.join(workdir, switch.SUBNETS_FILE), document)
    if jax.process_index() == 0:
        report.plot(document, paths.join(workdir, report.PLOT_FILE))
        if pss.latency_table:
            report.plot(document, paths.join(workdir, report.LATENCY_PLOT_FILE),
                        metric="latency")
    return {"min_flops": ends["min"]["flops"],
            "min_eval_accuracy": ends["min"]["test_accuracy"], "num_kept_subnets": len(kept)}
