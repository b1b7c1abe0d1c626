"""PSS-Net: prioritized subnet sampling for resource-adaptive supernets (papers/pssnet.md).

space.py       structure space: subnets (resolution + channels), widths, vectorised FLOPs
supernet.py    masked MobileNetV1/V2 supernets, ghost BN, slicing to plain subnets
sampler.py     FLOPs targets, the map and the FLOPs-conditioned sampler
pools.py       per-target pools (insert, EMA, evict, priority sampling) and schedules
step.py        the three-subnet training step as separately compiled pieces
evaluation.py  BN recalibration and per-subnet evaluation
method.py      the shared loop's Method: host sampling, pools in checkpoints, selection, export
report.py      subnets.json and the FLOPs-accuracy plot
switch.py      "what should I run under this budget?"
"""
