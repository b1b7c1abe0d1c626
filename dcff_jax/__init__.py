"""DCFF: dynamic-coded filter fusion (../shared/papers/dcff.md).

rates.py          safe parser of the per-layer rate strings; kept widths int(n (1 - r))
architectures.py  rate list -> compact plain-width architecture + the fused layers' bank sizes
fusion.py         temperature schedule, distances, proxies, KL scores, selection (faithful /
                  stable), slot-preserving reselection; jitted over all layers
model.py          FusedConv and the fused network (baseline families at compact widths)
method.py         the shared loop's Method: fusion state, per-epoch update, export folding
"""
