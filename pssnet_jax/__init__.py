"""PSS-Net: prioritized subnet sampling for resource-adaptive supernets (papers/pssnet.md).

space.py         structure space: subnets (resolution + channels), widths, vectorised FLOPs
supernet.py      the masked supernet (the baseline MobileNet with a masking norm), slicing
sampler.py       FLOPs targets, the map and the FLOPs-conditioned sampler
constraints.py   pool keys: FLOPs and predicted latency
pools.py         per-target pools (insert, EMA, evict, priority sampling) and schedules
host_state.py    what checkpoints keep on the host: pools, sampler generator, pending score
draw.py          the sampling plan and the per-step draw of the middle subnet
step.py          the three-subnet training step as separately compiled pieces
evaluation.py    BN recalibration and per-subnet evaluation
supernet_run.py  what a config resolves to (run, space, supernet, compiled pieces, plan)
train.py         the trainer: its loop, eval mode and export entry points
selection.py     the kept subnet of every pool, subnets.json and the plots
subnet_export.py a kept subnet as a plain model
validation.py    config checks
report.py        subnets.json entries and the FLOPs-accuracy plot
switch.py        "what should I run under this budget?"
latency.py       latency tables and the predictor
api.py           kept_subnets, subnet_for_budget, latency_table (re-exported by pssnet_dcff.api)
"""
