"""DCFF: dynamic-coded filter fusion (../shared/papers/dcff.md).

rates.py          safe parser of the per-layer rate strings; kept widths int(n (1 - r))
architectures.py  rate list -> compact plain-width architecture + the fused layers' bank sizes
fusion.py         temperature schedule, distances, proxies, KL scores, selection (faithful /
                  stable), slot-preserving reselection; jitted over all layers
model.py          FusedConv and the fused network (baseline families at compact widths)
fusion_state.py   the fusion entry of the train state, its per-epoch update, export folding
train.py          the trainer: its loop, eval mode and export entry points
validation.py     config checks
"""
