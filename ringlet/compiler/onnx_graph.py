"""ONNX files as torch modules: an ONNX graph read into an ``nn.Module`` whose ``forward`` calls
the torch function of each node, for the ``torch.export`` front door.

Why not onnx2torch: its import pulls in torchvision (for NMS and RoIAlign), which ringlet does not
depend on. Only the ``onnx`` package (protobuf parsing: no pickle, no code in the file) is needed,
and only when an ONNX file is given. Initializers become buffers; integer tensors computed from
shapes (``Shape → Gather → Concat → Reshape``, as exporters write ``x.view(x.size(0), -1)``) are
Python lists, known at capture time because the front door specialises to the example's shape.
A node of an operator not in :data:`OPS`, or an attribute ringlet cannot honour, is refused
naming the node, its operator and a way out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class OnnxError(ValueError):
    """The ONNX file cannot be read as a model ringlet runs; the message names the node."""


def _ints(v) -> list[int]:
    return [int(i) for i in (v.tolist() if isinstance(v, torch.Tensor) else v)]


def _pads(node, attrs: dict, dims: int = 2) -> tuple[list[int], list[int] | None]:
    """(symmetric padding per axis, or None and an F.pad list for asymmetric ONNX pads)."""
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise OnnxError(f"node {node}: auto_pad={auto} is not supported; export with explicit pads")
    pads = _ints(attrs.get("pads", [0] * 2 * dims))
    begin, end = pads[:dims], pads[dims:]
    if begin == end:
        return begin, None
    torch_pad: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        torch_pad += [b, e]
    return [0] * dims, torch_pad


def _conv(node, a, x, w, b=None):
    pad, extra = _pads(node, a)
    if extra is not None:
        x = F.pad(x, extra)
    return F.conv2d(x, w, b, _ints(a.get("strides", [1, 1])), pad, _ints(a.get("dilations", [1, 1])),
                    int(a.get("group", 1)))


def _gemm(node, a, x, w, c=None):
    if a.get("transA", 0):
        raise OnnxError(f"node {node}: Gemm with transA=1 (a transposed secret input) is not supported")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    y = F.linear(x, w if a.get("transB", 0) else w.t())
    y = y * alpha if alpha != 1.0 else y
    return y if c is None else y + (c * beta if beta != 1.0 else c)


def _pool(kind: str):
    def run(node, a, x):
        pad, extra = _pads(node, a)
        if extra is not None:
            x = F.pad(x, extra, value=-math.inf if kind == "max" else 0.0)
        k = _ints(a["kernel_shape"])
        stride = _ints(a.get("strides", [1, 1]))
        ceil = bool(a.get("ceil_mode", 0))
        if kind == "max":
            return F.max_pool2d(x, k, stride, pad, _ints(a.get("dilations", [1, 1])), ceil)
        return F.avg_pool2d(x, k, stride, pad, ceil, bool(a.get("count_include_pad", 0)))
    return run


def _reshape(node, a, x, shape, batch=None):
    shape = _ints(shape)
    if batch is not None and shape and shape[0] == batch and x.shape[0] != batch:
        shape[0] = x.shape[0]  # the file's fixed batch size, written as a constant by its exporter
    if not a.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _axes(a, given):
    return _ints(given) if given is not None else _ints(a.get("axes", []))


def _unsqueeze(node, a, x, axes=None):
    if isinstance(x, list):  # a shape value: a scalar becomes a one-element list
        return x if len(x) == 1 else [x]
    for ax in sorted(_axes(a, axes)):
        x = x.unsqueeze(ax)
    return x


def _squeeze(node, a, x, axes=None):
    axes = _axes(a, axes)
    return x.squeeze() if not axes else x.squeeze(tuple(axes))


def _gather(node, a, x, idx):
    if isinstance(x, list):  # indexing a shape: by a list of indices, or by one
        return [x[j] for j in _ints(idx)] if isinstance(idx, list) else x[int(idx)]
    return torch.index_select(x, int(a.get("axis", 0)), torch.as_tensor(idx).reshape(-1).long())


def _concat(node, a, *xs):
    if all(isinstance(v, (list, int)) for v in xs):
        return [i for v in xs for i in (v if isinstance(v, list) else [v])]
    return torch.cat(xs, int(a["axis"]))


def _slice(node, a, x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    index: list = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st != 1:
            raise OnnxError(f"node {node}: Slice with step {st} is not supported")
        index[ax] = slice(s, min(e, x.shape[ax]) if e >= 0 else e)
    return x[tuple(index)]


def _clip(node, a, x, lo=None, hi=None):
    lo = float(lo) if lo is not None else a.get("min")
    hi = float(hi) if hi is not None else a.get("max")
    return torch.clamp(x, None if lo is None else float(lo), None if hi is None else float(hi))


def _softmax(fn):
    def run(node, a, x):
        return fn(x, int(a.get("axis", -1)))
    return run


def _reduce_mean(node, a, x, axes=None):
    return torch.mean(x, _axes(a, axes), keepdim=bool(a.get("keepdims", 1)))


def _pad(node, a, x, pads=None, value=None):
    pads = _ints(pads if pads is not None else a["pads"])
    if a.get("mode", "constant") not in ("constant", b"constant"):
        raise OnnxError(f"node {node}: Pad mode {a.get('mode')} is not supported")
    half = len(pads) // 2
    torch_pad: list[int] = []
    for b, e in zip(reversed(pads[:half]), reversed(pads[half:])):
        torch_pad += [b, e]
    return F.pad(x, torch_pad, value=float(value) if value is not None else 0.0)


# ONNX operator → fn(node name, attributes, *inputs)
OPS: dict[str, Callable] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": lambda n, a, x, w: torch.matmul(x, w),
    "Relu": lambda n, a, x: torch.relu(x),
    "LeakyRelu": lambda n, a, x: F.leaky_relu(x, float(a.get("alpha", 0.01))),
    "Clip": _clip,
    "Sigmoid": lambda n, a, x: torch.sigmoid(x),
    "Tanh": lambda n, a, x: torch.tanh(x),
    "HardSigmoid": lambda n, a, x: torch.clamp(x * float(a.get("alpha", 0.2)) + float(a.get("beta", 0.5)),
                                               0.0, 1.0),
    "HardSwish": lambda n, a, x: F.hardswish(x),
    "Add": lambda n, a, x, y: x + y,
    "Sub": lambda n, a, x, y: x - y,
    "Mul": lambda n, a, x, y: x * y,
    "Div": lambda n, a, x, y: x / y,
    "Neg": lambda n, a, x: -x,
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda n, a, x: F.adaptive_avg_pool2d(x, 1),
    "GlobalMaxPool": lambda n, a, x: F.adaptive_max_pool2d(x, 1),
    "Flatten": lambda n, a, x: torch.flatten(x, int(a.get("axis", 1))) if int(a.get("axis", 1)) == 1
    else x.reshape(math.prod(x.shape[:int(a["axis"])]), -1),
    "Reshape": _reshape,
    "Transpose": lambda n, a, x: x.permute(*_ints(a["perm"])) if "perm" in a else x.permute(
        *reversed(range(x.ndim))),
    "Concat": _concat,
    "BatchNormalization": lambda n, a, x, s, b, m, v: F.batch_norm(x, m, v, s, b, False, 0.0,
                                                                  float(a.get("epsilon", 1e-5))),
    "Identity": lambda n, a, x: x,
    "Dropout": lambda n, a, x, *rest: x,
    "Shape": lambda n, a, x: list(x.shape),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "Pad": _pad,
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "ReduceMean": _reduce_mean,
}


def _attrs(node) -> dict:
    from onnx import helper
    out = {}
    for attr in node.attribute:
        v = helper.get_attribute_value(attr)
        out[attr.name] = v.decode() if isinstance(v, bytes) else v
    return out


class OnnxModule(nn.Module):
    """An ONNX graph as a module: one tensor input, one output, nodes run in file order."""

    def __init__(self, proto, where: str = "the ONNX model"):
        super().__init__()
        from onnx import numpy_helper
        graph = proto.graph
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in inits]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise OnnxError(f"{where}: ringlet runs graphs of one tensor input and one output (this one "
                            f"has inputs {inputs} and {len(graph.output)} outputs)")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        dims = next(i for i in graph.input if i.name == inputs[0]).type.tensor_type.shape.dim
        # a batch axis fixed in the file (exported without a dynamic batch): reshapes to it follow
        # the batch ringlet runs instead
        self.batch = int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") else None
        # the per-sample input shape, where the file fixes it
        rest = [int(d.dim_value) if d.HasField("dim_value") else None for d in dims[1:]]
        self.input_shape = tuple(rest) if rest and None not in rest else None
        self._names: dict[str, str] = {}  # ONNX value name -> buffer name
        self.consts: dict[str, object] = {}  # small integer constants (shapes, axes), scalars
        for name, arr in list(inits.items()):
            self._constant(name, arr)
        self.steps: list[tuple[str, str, list[str], list[str], dict]] = []
        for i, node in enumerate(graph.node):
            label = node.name or f"{node.op_type}_{i}"
            attrs = _attrs(node)
            if node.op_type == "Constant":
                from onnx import numpy_helper as nh
                value = attrs.get("value")
                arr = nh.to_array(value) if value is not None else np.asarray(
                    attrs.get("value_float", attrs.get("value_int", attrs.get("value_ints"))))
                self._constant(node.output[0], arr)
                continue
            if node.op_type not in OPS:
                raise OnnxError(f"{where}: node {label!r} is an ONNX {node.op_type}, which ringlet "
                                f"cannot run privately (supported: {', '.join(sorted(OPS))}); replace it "
                                f"in the model or compute it on the client")
            self.steps.append((node.op_type, label, list(node.input), list(node.output), attrs))

    def _constant(self, name: str, arr: np.ndarray) -> None:
        if arr.dtype.kind in "iub" and arr.size <= 64:
            self.consts[name] = arr.tolist()
        elif arr.dtype.kind == "f" and arr.ndim == 0:  # a scalar (Clip's bounds, x * 0.5): public
            self.consts[name] = float(arr)
        else:
            buf = f"c{len(self._names)}"
            self._names[name] = buf
            self.register_buffer(buf, torch.from_numpy(np.array(arr, dtype=np.float32)
                                                       if arr.dtype.kind == "f" else np.array(arr)))

    def _value(self, env: dict, name: str):
        if name == "":
            return None
        if name in env:
            return env[name]
        if name in self.consts:
            return self.consts[name]
        if name in self._names:
            return getattr(self, self._names[name])
        raise OnnxError(f"ONNX value {name!r} is used before it is computed")

    def forward(self, x):
        env = {self.input_name: x}
        for op, label, ins, outs, attrs in self.steps:
            args = [self._value(env, n) for n in ins]
            while args and args[-1] is None:
                args.pop()
            if op == "Reshape":
                args = args[:2] + [self.batch]
            try:
                result = OPS[op](label, attrs, *args)
            except OnnxError:
                raise
            except Exception as exc:
                raise OnnxError(f"ONNX node {label!r} ({op}): {type(exc).__name__}: {exc}") from exc
            env[outs[0]] = result
        return env[self.output_name]


def load_onnx(path) -> OnnxModule:
    """The ONNX file at ``path`` as a module (only the ``onnx`` package is needed)."""
    try:
        import onnx
    except ImportError:
        raise OnnxError(f"{path}: reading ONNX files needs the onnx package (pip install onnx)") from None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(p))
    except Exception as exc:  # noqa: BLE001 - protobuf's decode errors
        raise OnnxError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    return OnnxModule(proto, str(path)).eval()
