"""FLOPs counted from a traced forward pass, to check a family's analytic layer list.

Every family lists its layers (``layers(arch, image_size)``, common_jax/profile.py) for FLOPs,
parameters, the sampler's maps and the latency units; nothing there is traced, so a family
whose ``layers`` disagrees with its ``forward`` would give wrong budgets silently. Here the
plain network of a description is traced once (``jax.make_jaxpr`` on abstract inputs: no
weights, no compile) and the multiply-accumulates of every convolution and dot product in the
jaxpr are summed, including those inside nested jaxprs (jit, remat, custom derivatives; a scan
body counts once per iteration). ``check_layers`` compares them with the conv and linear
layers of ``layers`` (issue #29 part 4). Depthwise convolutions are traced as grouped
convolutions (``depthwise_impl='conv'``), not as the shifted multiply-adds of the CPU path.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from common_jax import models, profile


def _conv_macs(eqn) -> int:
    rhs, out = eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, spatial...)
    return math.prod(out) * rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])


def _dot_macs(eqn) -> int:
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs, out = eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape
    return math.prod(out) * math.prod(lhs[d] for d in contracting)


def _sub_jaxprs(value):
    if isinstance(value, jax.extend.core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jax.extend.core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _sub_jaxprs(item)


def jaxpr_macs(jaxpr) -> int:
    """Multiply-accumulates of the convolutions and dot products of a jaxpr, recursively."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            total += _conv_macs(eqn)
        elif name == "dot_general":
            total += _dot_macs(eqn)
        repeat = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in (s for value in eqn.params.values() for s in _sub_jaxprs(value)):
            total += repeat * jaxpr_macs(sub)
    return total


def traced_macs(arch: dict, image_size: int) -> int:
    """MACs of one image through the plain network of ``arch`` (inference), from its jaxpr."""
    model = models.build_model(arch, depthwise_impl="conv")
    image = jax.ShapeDtypeStruct((1, image_size, image_size, arch["in_channels"]), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), image)
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, image)
    return jaxpr_macs(jaxpr.jaxpr)


def layer_macs(arch: dict, image_size: int) -> int:
    """MACs of the conv and linear layers that ``layers`` lists (pooling adds left out)."""
    return sum(profile.layer_flops(layer) for layer in models.arch_layers(arch, image_size)
               if layer.kind in ("conv", "linear"))


def check_layers(arch: dict, image_size: int) -> int:
    """The family's MACs at ``image_size``; ValueError when its layer list and its traced
    forward pass disagree (both numbers in the message)."""
    listed, traced = layer_macs(arch, image_size), traced_macs(arch, image_size)
    if listed != traced:
        raise ValueError(f"family {arch.get('family')!r}: its layers() count {listed:,} MACs "
                         f"at {image_size}x{image_size}, its forward pass {traced:,}; the layer "
                         f"list does not describe the network")
    return listed
