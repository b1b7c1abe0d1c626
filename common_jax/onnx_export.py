"""ONNX export of an inference function: its jaxpr translated into an ONNX graph (opset 17).

The function (uint8 NHWC images -> logits, weights closed over) is traced once with a
symbolic batch; every equation whose inputs are all known is evaluated here (constant
folding), the rest become ONNX nodes. Values keep JAX's axis order in the jaxpr but ONNX's in
the graph: each graph tensor carries the permutation that maps one to the other, so
convolutions and pooling run in NCHW without a transpose per layer. A convolution is emitted
lazily: per-channel constant ``add``/``sub``/``mul``/``div`` that follow it (inference
BatchNorm) fold into its kernel and bias, so BatchNorm leaves no node behind.

Covers the primitives of this project's model families; anything else raises
NotImplementedError naming the primitive. Needs the ``onnx`` package (``pip install .[onnx]``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jax_core

OPSET = 17
_INT64_MAX = np.iinfo(np.int64).max


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A graph tensor: ONNX tensor ``name`` = the JAX value transposed by ``perm``."""
    name: str
    perm: tuple


@dataclasses.dataclass(frozen=True)
class PendingConv:
    """A convolution not yet emitted: NCHW input, OIHW kernel, bias, ONNX attributes."""
    x: str
    kernel: np.ndarray
    bias: np.ndarray
    attrs: dict
    perm: tuple  # of its output


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("export.format='onnx' needs the onnx package: pip install onnx "
                          "(or the project's [onnx] extra)") from None
    return onnx


class Graph:
    """Nodes and initializers of the graph being built."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], [], 0
        self._emitted = {}  # id(PendingConv) -> (the conv, kept alive; its Tensor)

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def add(self, op: str, inputs: list[str], **attrs) -> str:
        name = self.fresh(op.lower())
        self.nodes.append(_onnx().helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def constant(self, array) -> str:
        name = self.fresh("const")
        self.initializers.append(_onnx().numpy_helper.from_array(np.asarray(array), name))
        return name

    def tensor(self, value, perm: tuple, dtype=None) -> str:
        """The ONNX name of ``value`` laid out as JAX's axes transposed by ``perm``."""
        if isinstance(value, PendingConv):
            value = self.emit_conv(value)
        if isinstance(value, Tensor):
            if value.perm == perm:
                return value.name
            # ONNX axis j of the result is JAX axis perm[j], found at value.perm.index(...)
            order = [value.perm.index(axis) for axis in perm]
            return self.add("Transpose", [value.name], perm=order)
        array = np.asarray(value, dtype=dtype)
        if array.ndim == len(perm):
            array = np.transpose(array, perm)
        return self.constant(array)

    def emit_conv(self, conv: PendingConv) -> Tensor:
        """The Conv node of ``conv``, emitted once however many equations read it."""
        if id(conv) not in self._emitted:
            inputs = [conv.x, self.constant(conv.kernel.astype(np.float32)),
                      self.constant(conv.bias.astype(np.float32))]
            self._emitted[id(conv)] = (conv, Tensor(self.add("Conv", inputs, **conv.attrs),
                                                    conv.perm))
        return self._emitted[id(conv)][1]


def _is_known(value) -> bool:
    return isinstance(value, (np.ndarray, np.generic))


def _per_channel(array: np.ndarray, rank: int) -> bool:
    """A constant that varies at most along the last (channel) axis of a rank-``rank`` value."""
    return array.ndim <= rank and all(d == 1 for d in array.shape[:-1])


def _fold(conv: PendingConv, op: str, c: np.ndarray) -> PendingConv:
    """``conv op c`` with a per-channel constant, as a new kernel and bias."""
    c = np.asarray(c, np.float64).reshape(-1)
    kernel, bias = conv.kernel.astype(np.float64), conv.bias.astype(np.float64)
    if op in ("mul", "div"):
        scale = c if op == "mul" else 1.0 / c
        kernel = kernel * scale.reshape(-1, *[1] * (kernel.ndim - 1))
        bias = bias * scale
    else:
        bias = bias + c if op == "add" else bias - c
    return dataclasses.replace(conv, kernel=kernel, bias=np.broadcast_to(bias, conv.bias.shape))


_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min"}
_NUMPY_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
                 "max": np.maximum, "min": np.minimum}


def _binary(g: Graph, eqn, a, b):
    name, rank = eqn.primitive.name, len(eqn.outvars[0].aval.shape)
    dtype = eqn.outvars[0].aval.dtype
    if name in ("add", "mul") and _is_known(a) and not _is_known(b):
        a, b = b, a
    if isinstance(a, PendingConv) and _is_known(b) and name in ("add", "sub", "mul", "div") \
            and _per_channel(np.asarray(b), rank):
        return _fold(a, name, b)
    if name == "max" and _is_known(b) and np.asarray(b).size == 1 and float(b) == 0.0:
        return Tensor(g.add("Relu", [g.tensor(a, a.perm)]), a.perm)
    perm = (a if not _is_known(a) else b).perm
    return Tensor(g.add(_BINARY[name], [g.tensor(a, perm, dtype), g.tensor(b, perm, dtype)]),
                  perm)


def _conv(g: Graph, eqn, x, kernel):
    p = eqn.params
    dn = p["dimension_numbers"]
    if not _is_known(kernel) or p["batch_group_count"] != 1 or set(p["lhs_dilation"]) != {1}:
        raise NotImplementedError("conv_general_dilated: only convolutions with a constant "
                                  "kernel, no batch groups and no input dilation")
    pads = [lo for lo, _ in p["padding"]] + [hi for _, hi in p["padding"]]
    attrs = {"strides": list(p["window_strides"]), "pads": pads,
             "dilations": list(p["rhs_dilation"]), "group": p["feature_group_count"]}
    kernel = np.transpose(np.asarray(kernel), dn.rhs_spec)
    return PendingConv(g.tensor(x, tuple(dn.lhs_spec)), kernel,
                       np.zeros(kernel.shape[0], np.float32), attrs, tuple(dn.out_spec))


def _max_pool(g: Graph, eqn, x):
    p = eqn.params
    nchw = (0, 3, 1, 2)
    window = [p["window_dimensions"][a] for a in nchw]
    strides = [p["window_strides"][a] for a in nchw]
    padding = [p["padding"][a] for a in nchw]
    if window[:2] != [1, 1] or strides[:2] != [1, 1] or padding[:2] != [(0, 0), (0, 0)] \
            or set(p["base_dilation"]) != {1} or set(p["window_dilation"]) != {1}:
        raise NotImplementedError("reduce_window_max: only spatial NHWC windows")
    pads = [lo for lo, _ in padding[2:]] + [hi for _, hi in padding[2:]]
    return Tensor(g.add("MaxPool", [g.tensor(x, nchw)], kernel_shape=window[2:],
                        strides=strides[2:], pads=pads), nchw)


def _reduce_sum(g: Graph, eqn, x):
    axes = eqn.params["axes"]
    onnx_axes = [x.perm.index(a) for a in axes]
    kept = [a for a in x.perm if a not in axes]  # JAX axes in ONNX order
    remaining = sorted(kept)
    out = g.add("ReduceSum", [x.name, g.constant(np.asarray(onnx_axes, np.int64))],
                keepdims=0)
    return Tensor(out, tuple(remaining.index(a) for a in kept))


def _concatenate(g: Graph, eqn, *values):
    perm = next(v.perm for v in values if isinstance(v, (Tensor, PendingConv)))
    dtype = eqn.outvars[0].aval.dtype
    return Tensor(g.add("Concat", [g.tensor(v, perm, dtype) for v in values],
                        axis=perm.index(eqn.params["dimension"])), perm)


def _pad(g: Graph, eqn, x, value):
    config = eqn.params["padding_config"]
    if any(interior for _, _, interior in config):
        raise NotImplementedError("pad: interior padding")
    pads = [config[a][0] for a in x.perm] + [config[a][1] for a in x.perm]
    dtype = eqn.outvars[0].aval.dtype
    out = g.add("Pad", [g.tensor(x, x.perm), g.constant(np.asarray(pads, np.int64)),
                        g.constant(np.asarray(value, dtype))])
    return Tensor(out, x.perm)


def _slice(g: Graph, eqn, x):
    p = eqn.params
    strides = p["strides"] or (1,) * len(p["start_indices"])
    limits = [lim if isinstance(lim, int) else _INT64_MAX for lim in p["limit_indices"]]
    order = list(x.perm)
    inputs = [x.name] + [g.constant(np.asarray(values, np.int64)) for values in (
        [p["start_indices"][a] for a in order], [limits[a] for a in order],
        list(range(len(order))), [strides[a] for a in order])]
    return Tensor(g.add("Slice", inputs), x.perm)


def _reshape(g: Graph, eqn, x):
    shape = [d if isinstance(d, int) else -1 for d in eqn.outvars[0].aval.shape]
    if shape.count(-1) > 1:
        raise NotImplementedError("reshape with more than one symbolic dimension")
    identity = tuple(range(len(eqn.invars[0].aval.shape)))
    out = g.add("Reshape", [g.tensor(x, identity), g.constant(np.asarray(shape, np.int64))])
    return Tensor(out, tuple(range(len(shape))))


def _transpose(g: Graph, eqn, x):
    # JAX y axis i = x axis p[i]; the ONNX tensor stays, only its permutation changes
    inverse = np.argsort(eqn.params["permutation"])
    return Tensor(g.tensor(x, x.perm), tuple(int(inverse[a]) for a in x.perm))


def _dot_general(g: Graph, eqn, lhs, rhs):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lrank, rrank = len(eqn.invars[0].aval.shape), len(eqn.invars[1].aval.shape)
    dtype = eqn.outvars[0].aval.dtype
    a = g.tensor(lhs, tuple(range(lrank)), dtype)
    b = g.tensor(rhs, tuple(range(rrank)), dtype)
    if (lrank, rrank, tuple(lc), tuple(rc), tuple(lb)) == (2, 2, (1,), (0,), ()):
        return Tensor(g.add("MatMul", [a, b]), (0, 1))
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    ls = [next(letters) for _ in range(lrank)]
    rs = [next(letters) for _ in range(rrank)]
    for i, j in list(zip(lc, rc)) + list(zip(lb, rb)):
        rs[j] = ls[i]
    out = [ls[i] for i in lb] + [ls[i] for i in range(lrank) if i not in (*lc, *lb)] + \
          [rs[j] for j in range(rrank) if j not in (*rc, *rb)]
    equation = f"{''.join(ls)},{''.join(rs)}->{''.join(out)}"
    return Tensor(g.add("Einsum", [a, b], equation=equation), tuple(range(len(out))))


def _convert(g: Graph, eqn, x):
    onnx = _onnx()
    dtype = np.dtype(eqn.params["new_dtype"])
    if dtype == np.dtype(eqn.invars[0].aval.dtype):
        return x
    to = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    return Tensor(g.add("Cast", [g.tensor(x, x.perm)], to=to), x.perm)


def _unary(onnx_op: str):
    def handler(g: Graph, eqn, x):
        return Tensor(g.add(onnx_op, [g.tensor(x, x.perm)]), x.perm)
    return handler


HANDLERS = {**{name: _binary for name in _BINARY},
            "conv_general_dilated": _conv, "reduce_window_max": _max_pool,
            "reduce_sum": _reduce_sum, "concatenate": _concatenate, "pad": _pad,
            "slice": _slice, "reshape": _reshape, "squeeze": _reshape,
            "expand_dims": _reshape, "transpose": _transpose, "dot_general": _dot_general,
            "convert_element_type": _convert, "neg": _unary("Neg"), "exp": _unary("Exp"),
            "rsqrt": lambda g, eqn, x: Tensor(g.add("Reciprocal", [g.add(
                "Sqrt", [g.tensor(x, x.perm)])]), x.perm)}


def _known_broadcast(x: np.ndarray, shape, broadcast_dimensions) -> np.ndarray:
    """``broadcast_in_dim`` of a constant, kept at size 1 along the new axes (NumPy and the
    graph's elementwise ops broadcast it; the batch axis may be symbolic)."""
    expanded = [1] * len(shape)
    for source, target in enumerate(broadcast_dimensions):
        expanded[target] = x.shape[source]
    return np.reshape(x, expanded)


def _evaluate_known(eqn, args):
    """The outputs of an equation whose inputs are all constants."""
    name, p = eqn.primitive.name, eqn.params
    if name in _NUMPY_BINARY:
        dtype = eqn.outvars[0].aval.dtype
        return [np.asarray(_NUMPY_BINARY[name](*args), dtype)]
    if name == "broadcast_in_dim":
        return [_known_broadcast(args[0], p["shape"], p["broadcast_dimensions"])]
    if name == "rsqrt":
        return [np.asarray(1.0 / np.sqrt(args[0]), args[0].dtype)]
    if name == "convert_element_type":
        return [np.asarray(args[0], p["new_dtype"])]
    shapes = [v.aval.shape for v in eqn.outvars]
    if not all(isinstance(d, int) for shape in shapes for d in shape):
        raise NotImplementedError(f"{name} of constants with a symbolic shape")
    args = [np.broadcast_to(a, v.aval.shape) for a, v in zip(args, eqn.invars)]
    outs = eqn.primitive.bind(*[jnp.asarray(a) for a in args], **p)
    outs = outs if eqn.primitive.multiple_results else [outs]
    return [np.asarray(jax.device_get(o)) for o in outs]


def _run(g: Graph, jaxpr, consts: list, args: list) -> list:
    """Interprets ``jaxpr``: constants are folded, the rest become graph nodes."""
    env = dict(zip(jaxpr.constvars, [np.asarray(jax.device_get(c)) for c in consts]))
    env.update(zip(jaxpr.invars, args))

    def read(var):
        return np.asarray(var.val, var.aval.dtype) if isinstance(var, jax_core.Literal) \
            else env[var]

    for eqn in jaxpr.eqns:
        values = [read(v) for v in eqn.invars]
        inner = eqn.params.get("call_jaxpr", eqn.params.get("jaxpr"))
        if inner is not None and eqn.primitive.name in ("custom_jvp_call", "jit", "pjit"):
            outs = _run(g, inner.jaxpr, inner.consts, values)
        elif all(_is_known(v) for v in values):
            outs = _evaluate_known(eqn, values)
        elif eqn.primitive.name in HANDLERS:
            handler = HANDLERS[eqn.primitive.name]
            if handler is not _binary:  # only elementwise constants fold into a convolution
                values = [g.emit_conv(v) if isinstance(v, PendingConv) else v for v in values]
            outs = [handler(g, eqn, *values)]
        else:
            raise NotImplementedError(f"ONNX export: primitive {eqn.primitive.name!r} is not "
                                      f"supported")
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def to_onnx(fn, input_shape: tuple, input_dtype=np.uint8, *, input_name: str = "images",
            output_name: str = "logits"):
    """The ONNX ModelProto of ``fn`` for inputs of ``input_shape`` (its first dimension is
    the symbolic batch ``batch``), checked with ``onnx.checker``."""
    onnx = _onnx()
    shape = jax.export.symbolic_shape(", ".join(["batch", *map(str, input_shape[1:])]))
    closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, input_dtype))
    g = Graph()
    rank = len(input_shape)
    (out,) = _run(g, closed.jaxpr, closed.consts, [Tensor(input_name, tuple(range(rank)))])
    out_aval = closed.jaxpr.outvars[0].aval
    final = g.tensor(out, tuple(range(len(out_aval.shape))))
    g.nodes.append(onnx.helper.make_node("Identity", [final], [output_name]))
    helper = onnx.helper

    def info(name, dtype, dims):
        return helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
            ["batch" if not isinstance(d, int) else d for d in dims])

    graph = helper.make_graph(g.nodes, "inference", [info(input_name, input_dtype, shape)],
                              [info(output_name, out_aval.dtype, out_aval.shape)],
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pssnet-dcff")
    onnx.checker.check_model(model)
    return model
