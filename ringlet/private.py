"""``ringlet.compile``: the user's own ``nn.Module`` as a :class:`PrivateModel`, and what it can do.

A PrivateModel is the compiled graph (BatchNorm folded, every operator lowered), the input range
it is valid for, its normalisation and class names, and — when compiled from a module — the
module itself (needed to finetune). Every command of the CLI is one of its methods::

    pm = ringlet.compile(module, example_input)
    pm.plain(x)                                   # the compiled graph in float64
    cfg = pm.search(x_val, y_val, mode="eco")     # HummingBird's bits (or mode="budget", budget="8/64")
    pm.evaluate(x, y, relu_config=cfg)            # the share-level simulator's accuracy
    pm2 = pm.finetune((x_train, y_train), relu_config=cfg, epochs=2)
    res = pm.infer(x, relu_config=cfg, parties=2, transport="tcp")   # res.logits, res.report
    pm.save("dir"); pm = ringlet.load("dir")      # JSON + safetensors, no pickle

Nothing here unpickles or imports code named by a file: a saved folder holds data only.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ringlet.compiler import ranges
from ringlet.compiler.capture import CompileError, compile_model
from ringlet.compiler.config import ReluConfig, as_config
from ringlet.compiler.graph import LoweredGraph
from ringlet.compiler.interpret import ApproxInterpreter, PlainInterpreter, approximated_nodes, first_flip
from ringlet.compiler.model import CompiledModel
from ringlet.compiler.onnx_graph import OnnxError, load_onnx
from ringlet.compiler.options import SecureOptions
from ringlet.compiler.storage import load_graph, save_graph
from ringlet.data import Dataset
from ringlet.data.sources import model_normalization
from ringlet.protocols.norm import variance_range as norm_variance_range
from ringlet.protocols.piecewise import DEFAULT_SMOOTH, SMOOTH_METHODS
from ringlet.ring import FixedPoint
from ringlet.runtime.inference import private_inference
from ringlet.search import eco_ring
from ringlet.search.api import search_bits
from ringlet.search.finetune import finetune_module
from ringlet.search.simulator import Simulator
from ringlet.train.checkpoint import file_inside, load_state_into, read_safetensors

FORMAT = "ringlet-model"
VERSION = 1
MODEL_FILE = "ringlet-model.json"


@dataclass
class InferenceResult:
    """What a private inference returns: the model's outputs and the ``ringlet infer`` report."""

    logits: torch.Tensor
    report: dict


def _labelled(x, y, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if not x.is_floating_point():
        raise ValueError(f"{what}: inputs must be float model inputs, got {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{what}: {x.shape[0]} inputs but labels of shape {tuple(y.shape)}")
    return x.float(), y.to(torch.int64)


class PrivateModel:
    """A compiled model ready for search, simulation, finetuning and private inference."""

    def __init__(self, graph: LoweredGraph, *, frac_bits: int = 16, ring_bits: int = 64,
                 input_range: ranges.InputRange, calibration: dict | None = None,
                 meta: dict | None = None, module: nn.Module | None = None):
        self.graph = graph
        self.fixed = FixedPoint(frac_bits, ring_bits)
        self.input_range = input_range
        self.calibration = calibration
        self.meta = dict(meta or {})
        self.module = module
        self.headroom = self.headroom_at(self.fixed)

    def headroom_at(self, fixed: FixedPoint) -> dict:
        """Per-node headroom in the ring and fixed point ``fixed``; refuses (naming the node) a
        format that leaves fewer than ``ranges.MIN_HEADROOM`` bits anywhere."""
        report = ranges.headroom(self.graph, fixed.frac_bits, self.input_range, self.calibration,
                                 fixed.ring_bits)
        ranges.check_headroom(report, self.graph)
        return report

    def fixed_for(self, relu_config=None) -> FixedPoint:
        """The ring and fixed point of a run: the config's ``ring_bits``/``frac_bits`` if it has
        them (an eco-ring search writes both), else the model's own."""
        cfg = as_config(relu_config) if relu_config is not None else None
        frac = cfg.frac_bits if cfg is not None and cfg.frac_bits is not None else self.fixed.frac_bits
        ring_bits = cfg.ring_bits if cfg is not None and cfg.ring_bits is not None else self.fixed.ring_bits
        return FixedPoint(frac, ring_bits)

    # -- what it is -------------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple:
        return tuple(self.graph.input_shape)

    @property
    def relu_names(self) -> list[str]:
        return self.graph.relu_names

    def bits(self, relu_config=None) -> dict[str, tuple[int, int]]:
        """(k, m) for every activation that takes bits, from a config (unknown names are errors)."""
        return as_config(relu_config).resolve(self.graph.activation_names, "relu_config")

    def compiled(self, relu_config=None, options: SecureOptions | None = None,
                 **overrides) -> CompiledModel:
        """The graph bound to ReLU bits and protocol options (a :class:`SecureOptions`, and/or its
        fields as keywords), in the config's ring and fixed point when it names them (checked for
        headroom first)."""
        fixed = self.fixed_for(relu_config)
        if fixed != self.fixed:
            self.headroom_at(fixed)  # a ring too small for this model is refused, never wrapped
        protocols = as_config(relu_config).resolve_protocols(self.graph.activation_names, "relu_config")
        options = (options or SecureOptions()).replace(**overrides)
        return CompiledModel(self.graph, self.bits(relu_config), options, fixed,
                             self.input_range, protocols)

    def fingerprint(self, relu_config=None, options: SecureOptions | None = None, **overrides) -> dict:
        return self.compiled(relu_config, options, **overrides).fingerprint()

    def prepare(self, x) -> torch.Tensor:
        """The input as the servers take it (float32): a model that looks up token ids gets the
        client's lookup of ``x`` (the ids never leave the client)."""
        if self.graph.preprocess is not None:
            return self.graph.prepare(x).float()
        return torch.as_tensor(x).float()

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse inputs of another shape, or outside the input range (naming the element)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"the model takes inputs of shape {self.input_shape}, got {tuple(x.shape[1:])} "
                             f"(batch of {x.shape[0]})")
        ranges.check_input(x, self.input_range)

    # -- plaintext and simulation ------------------------------------------------------------------
    def plain(self, x: torch.Tensor, approximate: bool = False) -> torch.Tensor:
        """The compiled graph's outputs in float64 (a final softmax applied): with the exact
        activations (the default: the model's own function), or with ``approximate=True`` the
        approximations the private run computes (SiLU, GELU, sigmoid, ...; sign decisions exact)."""
        interp = ApproxInterpreter(self.graph) if approximate else PlainInterpreter(self.graph)
        with torch.no_grad():
            return self.graph.finish(interp.run(self.prepare(x).double()))

    def evaluate(self, x, y, relu_config=None, parties: int = 2, batch: int = 500,
                 approximate: bool = False) -> float:
        """Accuracy on (x, y): plaintext without a config (the exact activations, or with
        ``approximate=True`` the private run's approximations), else the share-level simulator's
        (which always computes the approximations)."""
        x, y = _labelled(self.prepare(x), y, "evaluate")
        if relu_config is None:  # the module (float32) when there is one, batch by batch
            forward = (lambda t: self.plain(t, approximate=True)) if approximate else self._plain_forward
            correct = sum(int((forward(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
                          for i in range(0, x.shape[0], batch))
            return correct / x.shape[0]
        bits = self.bits(relu_config)
        sim = Simulator(self.compiled(), x, y, parties=parties, cache_shares=False, batch=batch)
        return sim.accuracy(bits)

    def search(self, x_val, y_val, mode: str = "eco", budget: str | None = None, *, x_test=None,
               y_test=None, parties: int = 2, progress: bool = False, **kwargs) -> ReluConfig:
        """HummingBird's search for the bits each ReLU keeps; the report is ``cfg.report``.

        ``x_val, y_val`` drive the search (take them from the training data); ``x_test, y_test``
        measure the result in the report. Other keywords: groups, naive, margin, min_accuracy,
        widths, time_limit, m_scan (see :func:`ringlet.search.api.search_bits`).
        """
        vx, vy = _labelled(self.prepare(x_val), y_val, "search validation data")
        tx, ty = _labelled(self.prepare(x_test), y_test, "search test data") if x_test is not None else (None, None)
        report = {k: self.meta[k] for k in ("model", "dataset") if k in self.meta}
        if mode == "eco-ring":
            return self._eco_ring(vx, vy, tx, ty, parties, progress, report, **kwargs)
        cfg, report = search_bits(self.graph, vx, vy, tx, ty, mode=mode, budget=budget, parties=parties,
                                  progress=progress, frac_bits=self.fixed.frac_bits, report=report,
                                  **kwargs)
        return replace(cfg, report=report)

    def _eco_ring(self, vx, vy, tx, ty, parties, progress, report, ring_margin: int | None = None,
                  ring_frac: str = "keep", **kwargs) -> ReluConfig:
        """Eco's ReLU bits in the eco ring (see :mod:`ringlet.search.eco_ring`): the config names
        its ``ring_bits`` and ``frac_bits``; the report compares it with the model's own ring."""
        margin = eco_ring.DEFAULT_MARGIN_BITS if ring_margin is None else ring_margin
        fixed, ring_report = eco_ring.choose_ring(self, vx, vy, margin, ring_frac)
        cfg, report = search_bits(self.graph, vx, vy, tx, ty, mode="eco", parties=parties,
                                  progress=progress, frac_bits=fixed.frac_bits, report=report, **kwargs)
        if tx is not None and fixed.frac_bits != self.fixed.frac_bits:  # the fixed point's effect
            ring_report["emulated_test_accuracy"] = {
                "reference": eco_ring.emulated_accuracy(self.graph, tx, ty, self.fixed.frac_bits)[0],
                "eco_ring": eco_ring.emulated_accuracy(self.graph, tx, ty, fixed.frac_bits)[0]}
        cfg = replace(cfg, extra={**cfg.extra, "ring_bits": fixed.ring_bits, "frac_bits": fixed.frac_bits,
                                  "search": {**cfg.extra.get("search", {}), "mode": "eco-ring"}})
        too_wide = [k for k, (kk, _) in cfg.resolve(self.graph.activation_names).items()
                    if kk > fixed.ring_bits and kk != 64]
        if too_wide:
            raise ValueError(f"eco-ring: {too_wide[:3]} keep more bits than the {fixed.ring_bits}-bit ring")
        report.update(mode="eco-ring", eco_ring=ring_report,
                      headroom=self.headroom_summary(fixed=fixed))
        return replace(cfg, report=report)

    def finetune(self, train_data: Dataset | tuple[Any, Any], relu_config, epochs: int = 2, *, lr: float = 1e-3,
                 batch: int = 128, parties: int = 2, seed: int = 0, augment: bool = True,
                 progress: bool = False) -> PrivateModel:
        """Retrain a copy of the module with the approximate ReLUs in place; returns it compiled.

        ``train_data``: (inputs, labels) tensors or a :class:`ringlet.data.Dataset`.
        """
        if self.module is None:
            raise ValueError("finetuning needs the model's module: compile it with ringlet.compile, or "
                             "load the folder with ringlet.load(DIR, module=YourModel())")
        data = train_data if isinstance(train_data, Dataset) else Dataset.from_tensors(
            *_labelled(*train_data, "finetune training data"))
        if tuple(data.input_shape) != self.input_shape:
            raise ValueError(f"finetune: the data has inputs of shape {tuple(data.input_shape)}, the model "
                             f"takes {self.input_shape}")
        module = copy.deepcopy(self.module)
        bits = {k: v for k, v in self.bits(relu_config).items() if k in set(self.relu_names)}
        record = finetune_module(module, self.graph, bits, data, epochs, lr=lr, batch=batch,
                                 parties=parties, seed=seed, frac_bits=self.fixed.frac_bits,
                                 augment=augment, progress=progress)
        calib = data.tensors(min(256, len(data)))[0]
        meta = {**self.meta, "finetuned": {k: v for k, v in record.items() if k != "history"}}
        return compile(module, calib, frac_bits=self.fixed.frac_bits, ring_bits=self.fixed.ring_bits,
                       smooth=self.meta.get("smooth", "piecewise"),  # what it was compiled with
                       input_bound=self.input_range.bound if self.input_range.method == "user" else None,
                       normalization=self.normalization, classes=self.meta.get("classes"), meta=meta)

    @property
    def normalization(self):
        return model_normalization(self.meta)

    # -- private inference -------------------------------------------------------------------------
    def infer(self, x, relu_config=None, parties: int = 2, transport: str = "local", *,
              labels=None, batch: int = 32, frac_bits: int | None = None, pregenerate: bool = True,
              results_path: str | None = None, progress: bool = False, threads: int = 0,
              timeout: float = 120.0, link=None, options: SecureOptions | None = None,
              **overrides) -> InferenceResult:
        """Client, servers and dealer on this machine (threads, or processes over TCP).

        ``options`` (a :class:`SecureOptions`) and/or its fields as keywords (adder, select,
        truncation, private_weights, poly_method, poly_frac, poly_out_truncation, backend,
        relu_protocol, auto_link): the protocols. The report is the JSON of ``ringlet infer``.
        ``x``: a batch (N × input shape) or one sample (the input shape): then the logits have no
        batch axis either, as a torch module's output for an unbatched input.
        """
        x = self.prepare(x)
        single = tuple(x.shape) == tuple(self.input_shape)
        if single:
            x = x.unsqueeze(0)
        if labels is not None and single:
            labels = torch.as_tensor(labels).reshape(1)
        self.check_input(x)
        if link is not None and overrides.get("auto_link") is None and (
                options is None or options.auto_link is None):
            overrides["auto_link"] = link.name  # auto's cost model assumes the run's link
        compiled = self.compiled(relu_config, options, **overrides)
        if frac_bits is not None and frac_bits != compiled.fixed.frac_bits:
            raise ValueError(f"this run uses {compiled.fixed.frac_bits} fractional bits (the model's or "
                             f"its activation config's); compile it again with frac_bits={frac_bits}")
        report, logits = private_inference(
            compiled, x, None if labels is None else torch.as_tensor(labels), parties=parties,
            transport=transport, batch=batch, pregenerate=pregenerate, results_path=results_path,
            progress=progress, threads=threads, timeout=timeout, link=link,
            plain=lambda t: self._plain_forward(t))
        report.update({"relu_config": as_config(relu_config).to_dict() if relu_config is not None else None,
                       "model": self.meta.get("model"),
                       "input_range": self.headroom_summary(fixed=compiled.fixed)})
        return InferenceResult(logits[0] if single else logits, report)

    def _plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The plaintext baseline: the user's module in float32 (else the graph in float32)."""
        with torch.no_grad():
            if self.module is not None and self.graph.preprocess is None:  # (else x holds vectors)
                modes = {m: m.training for m in self.module.modules()}
                self.module.eval()
                try:
                    return output_tensor(self.module(x))
                finally:
                    for m, training in modes.items():
                        m.training = training
            return self.graph.finish(PlainInterpreter(self.graph, torch.float32).run(x))

    def headroom_summary(self, per_node: bool = True, fixed: FixedPoint | None = None) -> dict:
        """The headroom report (per layer unless ``per_node`` is false) at ``fixed`` (default:
        the model's own ring and fixed point)."""
        report = self.headroom if fixed is None or fixed == self.fixed else self.headroom_at(fixed)
        out = {k: v for k, v in report.items() if k != "per_node"}
        if per_node:
            out["per_layer"] = {n.label: report["per_node"][n.name] for n in self.graph.nodes
                                if n.kind not in ("input", "output")}
        return out

    # -- files -------------------------------------------------------------------------------------
    def save(self, folder) -> Path:
        """Write FOLDER/ringlet-model.json, graph.{json,safetensors} and module.safetensors."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_graph(self.graph, folder)
        record = {"format": FORMAT, "version": VERSION, "frac_bits": self.fixed.frac_bits,
                  "ring_bits": self.fixed.ring_bits,
                  "input_range": self.input_range.to_dict(), "calibration": self.calibration,
                  "meta": self.meta, "module": None}
        if self.module is not None:
            state = {k: v.detach().contiguous().clone() for k, v in self.module.state_dict().items()}
            save_file(state, str(folder / "module.safetensors"))
            record["module"] = {"weights": "module.safetensors", "class": type(self.module).__qualname__}
        (folder / MODEL_FILE).write_text(json.dumps(record, indent=1) + "\n")
        return folder


def is_saved_model(path) -> bool:
    return (Path(path) / MODEL_FILE).is_file()


def load(folder, module: nn.Module | None = None) -> PrivateModel:
    """A saved PrivateModel; ``module`` (the same architecture) gets the saved module weights."""
    folder = Path(folder)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a saved ringlet model (no {MODEL_FILE})")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path}: not a ringlet model file")
    if record.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported version {record.get('version')!r} (this ringlet reads {VERSION})")
    graph = load_graph(folder)
    if module is not None:
        if not record.get("module"):
            raise ValueError(f"{folder}: saved without module weights; compile the module again")
        weights = file_inside(folder, record["module"].get("weights"), str(path))
        load_state_into(module, read_safetensors(weights, str(folder)), str(folder),
                        type(module).__name__)
        module.eval()
    return PrivateModel(graph, frac_bits=int(record["frac_bits"]),
                        ring_bits=int(record.get("ring_bits", 64)),
                        input_range=ranges.InputRange.from_dict(record["input_range"]),
                        calibration=record.get("calibration"), meta=record.get("meta"), module=module)


def output_tensor(out) -> torch.Tensor:
    """A model's output as the tensor ringlet computes: the tensor itself, the ``logits`` of a
    Hugging Face ModelOutput, or the one tensor of a tuple or dict (as torch.export flattens it)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    values = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (tuple, list)) else []
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:
        return tensors[0]
    raise CompileError(f"the model returns {type(out).__name__}; ringlet runs models that return one "
                       f"tensor (or an output with .logits)")


CHECK_SAMPLES = 256  # calibration inputs the approximation check runs


class ApproximationWarning(UserWarning):
    """An activation's approximation changes a top-1 class of the calibration data."""


def _check_approximations(graph, x: torch.Tensor) -> dict | None:
    """Warn, naming the layer, when the approximated activations change a top-1 decision on the
    calibration inputs ``x``; the check's result for the model's metadata."""
    nodes = approximated_nodes(graph)
    if not nodes:
        return None
    errors = {n.label: float(n.params["spec"]["max_error"]) for n in nodes if "spec" in n.params}
    flipped, first = first_flip(graph, x)
    out = {"layers": len(nodes), "max_error": max(errors.values(), default=None),
           "calibration_inputs": int(x.shape[0]), "top1_changed": flipped,
           "first_layer": first.label if first is not None else None}
    if flipped and first is not None and graph.output_shape and len(graph.output_shape) == 1:
        name = first.params.get("name", first.kind)
        warnings.warn(ApproximationWarning(
            f"the approximated activations change the top-1 class of {flipped} of {x.shape[0]} "
            f"calibration inputs, from layer {first.label!r} ({name}, max error "
            f"{errors.get(first.label, float('nan')):.3g}) on: the private run can answer another "
            f"class than the model. Compare pm.plain(x) with pm.plain(x, approximate=True); replace "
            f"that activation (ReLU, or a fitted PolyAct) and finetune"), stacklevel=3)
    return out


def _check_norm_ranges(graph, x: torch.Tensor) -> None:
    """Refuse a LayerNorm / RMSNorm whose var + ε on the calibration inputs lies outside the range
    its protocol resolves (the private run would answer wrongly there)."""
    nodes = [n for n in graph.nodes if n.kind == "layernorm"]
    if not nodes:
        return
    with torch.no_grad():
        env = PlainInterpreter(graph).run(x.double(), keep=True)
    for node in nodes:
        v = env[node.inputs[0]]
        var = (v.var(-1, unbiased=False) if node.params["center"] else v.pow(2).mean(-1)) + node.params["eps"]
        lo, hi = norm_variance_range(int(v.shape[-1]))
        if float(var.min()) < lo or float(var.max()) >= hi:
            raise CompileError(
                f"layer {node.label!r}: var + eps reaches [{float(var.min()):.3g}, {float(var.max()):.3g}] on "
                f"the calibration inputs; the secure LayerNorm resolves [{lo:.3g}, {hi:.3g}) for rows of "
                f"{v.shape[-1]} values: scale the layer's input down (or raise eps)")


def compile(module: nn.Module | str | Path, example_input, *, frac_bits: int = 16, ring_bits: int = 64,
            smooth: str = DEFAULT_SMOOTH,
            calibration=None, input_bound: float | None = None, normalization=None, classes=None,
            meta: dict | None = None, frontend: str = "auto") -> PrivateModel:
    """Compile ``module`` for private inference; a :class:`CompileError` says what is not supported.

    ``example_input``: a batch of inputs (or the per-sample shape). ``calibration``: public inputs
    whose activations size the fixed-point headroom (default: the example, if it is a tensor).
    ``input_bound``, ``normalization`` ((mean, std) of pixels in [0, 1]): the input range (see
    :mod:`ringlet.compiler.ranges`). ``smooth``: how sigmoid, GELU and the like are computed —
    ``"accurate"`` (default: breakpoints and a polynomial between each, error ≤ 1e-3 on every
    real), ``"piecewise"`` (one polynomial between two breakpoints: cheaper, error up to 0.05) or
    ``"poly"`` (the polynomial alone, valid on its range only). ``frontend``: how the model is captured — ``"auto"``
    (torch.fx, and ``torch.export`` when fx cannot trace a node: asserts, ``if`` on shapes, fused
    layers), ``"fx"`` or ``"export"``.
    """
    if isinstance(module, (str, Path)) and str(module).endswith(".onnx"):
        try:
            module = load_onnx(module)
        except OnnxError as exc:
            raise CompileError(str(exc)) from None
    if not isinstance(module, nn.Module):
        raise CompileError(f"ringlet.compile takes a torch.nn.Module or an ONNX file, got "
                           f"{type(module).__name__}")
    if smooth not in SMOOTH_METHODS:
        raise ValueError(f"smooth={smooth!r}: one of {', '.join(SMOOTH_METHODS)}")
    graph = compile_model(module, example_input, frontend=frontend, smooth=smooth)
    norm = None
    if normalization is not None:
        mean, std = normalization
        norm = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    calib_x = calibration if calibration is not None else (
        example_input if isinstance(example_input, torch.Tensor) else None)
    calib_source = "given" if calib_x is not None else None
    if calib_x is None:  # public generated inputs over the range the model accepts
        calib_x, calib_source = ranges.generated_inputs(graph.input_shape, norm and (norm["mean"], norm["std"]),
                                                        input_bound)
    if graph.preprocess is not None:  # token ids: their embeddings are what the servers take
        calib_x = graph.prepare(calib_x)
    calib_x = torch.as_tensor(calib_x).float()
    if calib_x.ndim == len(graph.input_shape):  # one sample
        calib_x = calib_x.unsqueeze(0)
    calib = ranges.calibrate(graph, calib_x)
    approximation = _check_approximations(graph, calib_x[:CHECK_SAMPLES])
    _check_norm_ranges(graph, calib_x[:CHECK_SAMPLES])
    rng = ranges.choose_bound(calib, (norm["mean"], norm["std"]) if norm else None, input_bound)
    out = graph.output_shape
    info = {"input_shape": list(graph.input_shape), "num_classes": int(out[0]) if len(out) == 1 else None,
            "normalization": norm, "classes": list(classes) if classes else None, "smooth": smooth,
            "postprocess": graph.postprocess, "source": {"class": type(module).__qualname__},
            "calibration": calib_source, "approximation": approximation}
    info.update(meta or {})
    # the model keeps its own copy: later edits of the caller's module change nothing here
    return PrivateModel(graph, frac_bits=frac_bits, ring_bits=ring_bits, input_range=rng,
                        calibration=calib, meta=info, module=copy.deepcopy(module))


__all__ = ["PrivateModel", "InferenceResult", "compile", "load", "is_saved_model", "as_config"]
