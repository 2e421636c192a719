"""Where a model and its data come from, for every command: one resolution, one set of rules.

Model specs (``--model``), tried in this order:

- a saved PrivateModel folder (``pm.save(DIR)``): data only, never code;
- a checkpoint (``NAME.safetensors`` + ``NAME.json``, a path or a shipped stem such as
  ``resnet20-fmnist``) of a zoo architecture;
- ``package.module:factory``: an importable callable returning the ``nn.Module``, with
  ``--weights FILE.safetensors`` (its ``FILE.json``, when ringlet wrote one, gives the dataset,
  normalisation and classes). A checkpoint trained from a factory names it but is never imported on
  its own: load it with ``--model FACTORY --weights FILE``;
- an ONNX file (``model.onnx``): its graph and weights (:mod:`ringlet.compiler.onnx_graph`);
- a zoo name: seeded random weights, BatchNorm calibrated on public data (the dataset's training
  split, or generated N(0, 1) inputs) — never on the client's query.

Data: a named dataset's split (``imagefolder`` with ``--data-dir``), or ``--input X.npy
[--labels Y.npy]``; pixels are normalised with ``--normalize`` if given, else the model's stored
normalisation, else the dataset's own.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ringlet.compiler.calibrate import calibrate_batchnorm
from ringlet.compiler.config import as_config
from ringlet.compiler.onnx_graph import load_onnx
from ringlet.compiler.options import SecureOptions
from ringlet.data import DatasetMissingError, load_dataset
from ringlet.data.sources import load_arrays, model_normalization, parse_normalize
from ringlet.models import MODEL_NAMES, build_model
from ringlet.private import PrivateModel, compile, is_saved_model, load
from ringlet.protocols.piecewise import DEFAULT_SMOOTH
from ringlet.train.checkpoint import (
    find_checkpoint,
    is_checkpoint,
    load_checkpoint,
    load_state,
    load_state_into,
    read_meta,
    read_safetensors,
)

CALIBRATION_SAMPLES = 256
CALIBRATION_VALUES = 1 << 23  # fewer images where they are large (ImageNet size: 55)


@dataclass
class ModelSource:
    """A resolved ``--model``: the module (None for a saved PrivateModel) and what is known of it."""

    spec: str
    module: nn.Module | None
    meta: dict = field(default_factory=dict)
    saved: PrivateModel | None = None  # a loaded PrivateModel when the spec is a saved folder


def _factory(spec: str):
    mod_name, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"--model {spec}: cannot import {mod_name!r} ({exc})") from None
    fn = mod
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"--model {spec}: module {mod_name!r} has no {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"--model {spec}: {attr!r} is not callable")
    return fn


def _load_weights(module: nn.Module, weights: str, spec: str) -> dict:
    """Load a safetensors state dict into ``module`` (strict); returns the JSON beside it, if any."""
    path = Path(weights)
    if path.suffix not in (".safetensors", ""):
        raise ValueError(f"--weights {weights}: expected a .safetensors file (no pickle is read)")
    tensors_path = path.with_suffix(".safetensors")
    if not tensors_path.is_file():
        raise FileNotFoundError(f"--weights {weights}: {tensors_path} not found")
    if is_checkpoint(path):
        state, meta = load_state(path)
    else:
        state, meta = read_safetensors(tensors_path, f"--weights {weights}"), {}
    load_state_into(module, state, f"--weights {weights}", spec)
    return {**meta, "weights": str(tensors_path)}


def resolve_model(spec: str, *, weights: str | None = None, input_shape=None, num_classes: int = 10,
                  seed: int = 0) -> ModelSource:
    """The module of a ``--model`` spec (see the module docstring); nothing is compiled yet."""
    if is_saved_model(spec):
        if weights:
            raise ValueError("--weights applies to --model package.module:factory only")
        pm = load(spec)
        return ModelSource(spec, None, dict(pm.meta), saved=pm)
    if spec.endswith(".onnx"):
        if weights:
            raise ValueError("--weights applies to --model package.module:factory only (an ONNX file "
                             "holds its weights)")
        graph = load_onnx(spec)
        return ModelSource(spec, graph, {"model": spec, "onnx": spec,
                                         **({"input_shape": list(graph.input_shape)}
                                            if graph.input_shape else {})})
    ckpt = find_checkpoint(spec)
    if ckpt is not None:
        if weights:
            raise ValueError("--weights applies to --model package.module:factory only")
        meta = read_meta(ckpt)
        if meta.get("factory"):
            raise ValueError(f"checkpoint {ckpt} was trained from the factory {meta['factory']!r}: load "
                             f"it with --model {meta['factory']} --weights {Path(ckpt).with_suffix('.safetensors')}")
        module, meta = load_checkpoint(ckpt)
        return ModelSource(spec, module, {**meta, "checkpoint": str(ckpt)})
    if ":" in spec:
        made = _factory(spec)()
        if not isinstance(made, nn.Module):
            raise ValueError(f"--model {spec}: the factory returned {type(made).__name__}, not an nn.Module")
        meta = _load_weights(made, weights, spec) if weights else {"random_weights": True}
        made.eval()
        return ModelSource(spec, made, {**meta, "factory": spec, "model": spec})
    if weights:
        raise ValueError("--weights applies to --model package.module:factory only")
    if spec in MODEL_NAMES:
        if input_shape is None:
            raise ValueError(f"zoo model {spec!r} needs an input shape (give --dataset or --input)")
        torch.manual_seed(seed)  # not secret: public random weights of a demonstration model
        module = build_model(spec, input_shape, num_classes).eval()
        return ModelSource(spec, module, {"model": spec, "input_shape": list(input_shape),
                                          "num_classes": num_classes, "checkpoint": None,
                                          "random_weights": True})
    if Path(spec).exists():
        raise ValueError(f"--model {spec}: neither a saved model folder (no ringlet-model.json) nor a "
                         f"checkpoint (NAME.safetensors + NAME.json)")
    raise ValueError(f"--model {spec!r}: not a saved model folder, a checkpoint, a "
                     f"package.module:factory or a zoo model ({', '.join(MODEL_NAMES)})")


@dataclass
class Inputs:
    """Model inputs, their labels (or None) and where they came from."""

    x: torch.Tensor
    y: torch.Tensor | None
    info: dict
    normalization: tuple | None  # (mean, std) the pixels were normalised with, None for float inputs
    classes: list | None = None


def load_split(meta: dict, dataset: str | None, split: str, data_dir=None, normalize: str | None = None,
               image_size=None):
    """A dataset split normalised by the rules in the module docstring; returns (Dataset, source)."""
    name = dataset or meta.get("dataset")
    if name is None:
        raise ValueError("give --dataset or --input (the model names no dataset of its own)")
    ds = load_dataset(name, split, data_dir, image_size=image_size)
    override = parse_normalize(normalize)
    chosen = override or model_normalization(meta)
    if chosen is None:
        return ds, "dataset"
    return ds.with_normalization(*chosen), "override" if override is not None else "model"


def load_inputs(meta: dict, *, dataset: str | None = None, split: str = "test",
                samples: int | None = None, input_path: str | None = None,
                labels_path: str | None = None, data_dir=None, normalize: str | None = None,
                image_size=None) -> Inputs:
    """Inputs for a command: ``--input``/``--labels`` arrays or a dataset split (normalised by the
    rules in the module docstring)."""
    if input_path:
        if dataset:
            raise ValueError("give either --dataset or --input, not both")
        x, y, info = load_arrays(input_path, labels_path, samples, model_normalization(meta),
                                 override=parse_normalize(normalize), input_shape=meta.get("input_shape"))
        norm = info.get("normalization")
        return Inputs(x, y, info, (tuple(norm["mean"]), tuple(norm["std"])) if norm else None)
    if labels_path:
        raise ValueError("--labels goes with --input")
    if samples is not None and samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    ds, source = load_split(meta, dataset, split, data_dir, normalize, image_size)
    x, y = ds.tensors(samples)
    info = {"dataset": ds.name, "split": split, "synthetic": ds.synthetic,
            "normalization": {"mean": list(ds.mean), "std": list(ds.std), "source": source}}
    return Inputs(x, y, info, (tuple(ds.mean), tuple(ds.std)), list(ds.classes) if ds.classes else None)


def public_calibration(meta: dict, inputs: Inputs, dataset: str | None, data_dir=None,
                       image_size=None) -> tuple[torch.Tensor | None, str]:
    """Public inputs that size BatchNorm statistics and the fixed-point headroom: the training
    split of the dataset in use (never the query itself), else none."""
    name = dataset or meta.get("dataset")
    if name:
        try:
            train = load_dataset(name, "train", data_dir, image_size=image_size)
        except (DatasetMissingError, FileNotFoundError, ValueError):
            return None, "none"
        norm = inputs.normalization or model_normalization(meta)
        if norm is not None:
            train = train.with_normalization(*norm)
        per_image = max(1, train.images[0].numel())
        n = min(CALIBRATION_SAMPLES, len(train), max(16, CALIBRATION_VALUES // per_image))
        return train.tensors(n)[0], f"{name} training split ({n} images)"
    return None, "none"


def generated_calibration(shape, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Public generated inputs, N(0, 1) (a zoo model's BatchNorm when no public data is at hand)."""
    gen = torch.Generator().manual_seed(seed)  # not secret: public calibration inputs
    return torch.randn(n, *shape, generator=gen)  # not secret: the same public inputs


def compile_source(src: ModelSource, inputs: Inputs, *, calibration: torch.Tensor | None,
                   calibration_source: str, frac_bits: int | None = None, smooth: str | None = None,
                   input_bound: float | None = None, ring_bits: int | None = None):
    """The PrivateModel of a resolved source for these inputs (zoo BatchNorm calibrated first).

    ``frac_bits``, ``smooth``, ``input_bound``: None means the saved model's, or the defaults (16,
    piecewise, from the normalisation or calibration); a saved model refuses different ones.
    ``ring_bits`` (default 64, or the saved model's) may differ from a saved model's: the ring is
    chosen at run time, and a ring too small for the model's headroom is refused.
    """
    if src.saved is not None:
        pm = src.saved
        asked = {"--frac-bits": (frac_bits, pm.fixed.frac_bits), "--smooth": (smooth, pm.meta.get("smooth")),
                 "--input-bound": (input_bound, pm.input_range.bound)}
        for flag, (want, have) in asked.items():
            if want is not None and want != have:
                raise ValueError(f"{src.spec} was compiled with {flag} {have}; {flag} {want} needs "
                                 f"compiling the module again")
        if ring_bits is not None and ring_bits != pm.fixed.ring_bits:
            pm = PrivateModel(pm.graph, frac_bits=pm.fixed.frac_bits, ring_bits=ring_bits,
                              input_range=pm.input_range, calibration=pm.calibration, meta=pm.meta,
                              module=pm.module)
        return pm
    meta = dict(src.meta)
    shape = tuple(inputs.x.shape[1:])
    assert src.module is not None  # a source is a module or a saved model
    if meta.get("random_weights") and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                          for m in src.module.modules()):
        if calibration is None:
            calibration, calibration_source = generated_calibration(shape), "generated N(0, 1) inputs"
        calibrate_batchnorm(src.module, calibration)
        meta["batchnorm_calibrated_on"] = calibration_source
    norm = inputs.normalization if inputs.normalization is not None else model_normalization(meta)
    if calibration is None and norm is None and input_bound is None:
        raise ValueError("no public data to size the model's input range: give --input-bound B (the "
                         "largest |input| the model must accept), a --dataset whose training split "
                         "is public calibration data, or uint8 pixels with a normalisation")
    example = calibration if calibration is not None else shape
    if calibration is not None:
        meta["calibration"] = calibration_source
    for key in ("checkpoint", "weights"):
        if key in meta:
            meta[key] = str(meta[key])
    return compile(src.module, example, frac_bits=frac_bits or 16, ring_bits=ring_bits or 64,
                   smooth=smooth or DEFAULT_SMOOTH,
                   calibration=calibration, input_bound=input_bound, normalization=norm,
                   classes=meta.get("classes") or inputs.classes,
                   meta=json.loads(json.dumps({k: v for k, v in meta.items() if k != "history"},
                                              default=str)))


def prepare(model: str, *, weights: str | None = None, dataset: str | None = None, split: str = "test",
            samples: int | None = None, input_path: str | None = None, labels_path: str | None = None,
            data_dir=None, normalize: str | None = None, image_size=None, seed: int = 0,
            frac_bits: int | None = None, smooth: str | None = None, input_bound: float | None = None,
            local: bool = False, ring_bits: int | None = None):
    """A command's model and data: (PrivateModel, ModelSource, Inputs).

    ``local``: nothing is sent to servers (eval, search, finetune), so without public calibration
    data the command's own inputs size the fixed point; a private inference never does that.
    """
    zoo = model in MODEL_NAMES and find_checkpoint(model) is None
    src = None if zoo else resolve_model(model, weights=weights)
    inputs = load_inputs(src.meta if src else {}, dataset=dataset, split=split, samples=samples,
                         input_path=input_path, labels_path=labels_path, data_dir=data_dir,
                         normalize=normalize, image_size=image_size)
    if src is None:
        src = resolve_model(model, weights=weights, input_shape=tuple(inputs.x.shape[1:]), seed=seed,
                            num_classes=len(inputs.classes) if inputs.classes else 10)
    calib, calib_source = public_calibration(src.meta, inputs, dataset, data_dir, image_size)
    if calib is None and local:
        calib, calib_source = inputs.x, "the command's own inputs (a local command)"
    pm = compile_source(src, inputs, calibration=calib, calibration_source=calib_source,
                        frac_bits=frac_bits, smooth=smooth, input_bound=input_bound,
                        ring_bits=ring_bits)
    if tuple(inputs.x.shape[1:]) != pm.input_shape:
        raise ValueError(f"model {model} takes inputs of shape {pm.input_shape}, the data has "
                         f"{tuple(inputs.x.shape[1:])}")
    if inputs.y is not None and pm.meta.get("num_classes") and int(inputs.y.max()) >= pm.meta["num_classes"]:
        raise ValueError(f"labels go up to {int(inputs.y.max())}, the model has {pm.meta['num_classes']} classes")
    return pm, src, inputs


def server_model(model: str, *, weights: str | None = None, input_shape=None, relu_config=None,
                 dataset: str | None = None, data_dir=None, frac_bits: int | None = None,
                 ring_bits: int | None = None, smooth: str | None = None,
                 input_bound: float | None = None, options: SecureOptions | None = None,
                 **overrides):
    """A server's CompiledModel from a model spec: a server holds no data, so only public
    calibration (the model's dataset's training split) sizes it. ``options`` (and/or its fields as
    keywords) go to :meth:`PrivateModel.compiled`."""
    shape = tuple(int(v) for v in input_shape) if input_shape else None
    src = resolve_model(model, weights=weights, input_shape=shape)
    if src.saved is None:
        shape = shape or tuple(src.meta.get("input_shape") or ())
        if not shape:
            raise ValueError(f"model {model}: give its input shape C,H,W (the model records none)")
    else:
        shape = src.saved.input_shape
    inputs = Inputs(torch.zeros(1, *shape), None, {}, model_normalization(src.meta))
    calib, calib_source = public_calibration(src.meta, inputs, dataset, data_dir)
    pm = compile_source(src, inputs, calibration=calib, calibration_source=calib_source,
                        frac_bits=frac_bits, smooth=smooth, input_bound=input_bound,
                        ring_bits=ring_bits)
    config = as_config(relu_config) if relu_config else None
    compiled = pm.compiled(config, options, **overrides)
    compiled.normalization = model_normalization(pm.meta) or model_normalization(src.meta)
    return compiled
