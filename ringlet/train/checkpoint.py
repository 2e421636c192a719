"""Checkpoints without pickle: weights in safetensors, metadata in a JSON file beside them.

``models/resnet20-fmnist.safetensors`` holds the state dict; ``models/resnet20-fmnist.json`` holds
``{"format": "ringlet-checkpoint", "version": 1, "model", "input_shape", "num_classes", "dataset",
"normalization": {"mean", "std"}, "accuracy", "command", "sha256", ...}``. Loading checks the format,
the version, the digest of the weights file and that the tensors fit the named architecture.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ringlet.grelu.convert import convert
from ringlet.models import build_model
from ringlet.poly.layers import convert_to_poly

FORMAT = "ringlet-checkpoint"
VERSION = 1
DATASET_SHORT = {"fashion-mnist": "fmnist"}


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted, foreign, or does not fit its model."""


def checkpoint_stem(model: str, dataset: str) -> str:
    """File stem of a checkpoint: ``resnet20-fmnist`` for resnet20 trained on fashion-mnist."""
    return f"{model}-{DATASET_SHORT.get(dataset, dataset)}"


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_checkpoint(path: str | os.PathLike) -> bool:
    weights, meta = _paths(path)
    return weights.is_file() and meta.is_file()


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict) -> Path:
    """Write ``path``.safetensors and ``path``.json; returns the weights path."""
    weights, meta_path = _paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    record = {"format": FORMAT, "version": VERSION, **meta, "sha256": _sha256(weights)}
    meta_path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return weights


def read_meta(path: str | os.PathLike) -> dict:
    """The checkpoint's JSON metadata, validated."""
    weights, meta_path = _paths(path)
    if not meta_path.is_file() or not weights.is_file():
        raise CheckpointError(f"checkpoint {path}: need both {weights} and {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a ringlet checkpoint (format {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{meta_path}: not a ringlet checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path}: unsupported checkpoint version {meta.get('version')!r}")
    for key in ("model", "input_shape", "num_classes"):
        if key not in meta:
            raise CheckpointError(f"{meta_path}: missing key {key!r}")
    return meta


def read_safetensors(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file; anything else (a pickle renamed, a truncated file) is a
    :class:`CheckpointError` naming ``what`` and the file — never unpickled."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{what}: {path} is not a readable safetensors file ({exc})") from None


def file_inside(folder: str | os.PathLike, name, what: str) -> Path:
    """``folder / name`` for a file name read from a saved file; a name that leads outside
    ``folder`` (an absolute path, ``..``, a link out) is refused."""
    base = Path(folder).resolve()
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{what}: the file name {name!r} is not a string")
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise CheckpointError(f"{what}: the file {name!r} lies outside {folder}; a saved model "
                              f"names files in its own folder only")
    return path


def load_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The verified state dict and metadata of a checkpoint (no model built)."""
    weights, _ = _paths(path)
    meta = read_meta(path)
    digest = _sha256(weights)
    if meta.get("sha256") and meta["sha256"] != digest:
        raise CheckpointError(f"{weights}: sha256 {digest[:12]}… does not match the JSON's "
                              f"{meta['sha256'][:12]}… (corrupted or replaced file)")
    return read_safetensors(weights, f"checkpoint {path}"), meta


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """Build the checkpoint's zoo model (or use ``model``) and load its weights; eval mode."""
    state, meta = load_state(path)
    if model is None:
        model = build_model(meta["model"], meta["input_shape"], meta["num_classes"])
        if meta.get("sharing"):  # a model with gReLU layers: rebuild them from the stored groups
            convert(model, meta["sharing"], meta["input_shape"], state=state)
        if meta.get("poly"):  # a model with polynomial activations
            convert_to_poly(model, meta["poly"])
    load_state_into(model, state, str(path), repr(meta["model"]))
    model.eval()
    return model, meta


def load_state_into(model: nn.Module, state: dict, where: str, what: str) -> None:
    """Load ``state`` into ``model`` after checking every name and shape (errors name ``where``,
    the weights, and ``what``, the model)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: tensors do not fit model {what} "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(f"{where}: tensor {key} has shape {tuple(tensor.shape)}, "
                                  f"model expects {tuple(expected[key].shape)}")
    model.load_state_dict(state)


def shipped_models_dir() -> Path:
    """Where shipped checkpoints live: $RINGLET_MODELS, else the repository's ``models/``."""
    env = os.environ.get("RINGLET_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models"


def find_checkpoint(name_or_path: str) -> Path | None:
    """A checkpoint path for ``name_or_path`` (a path, or a shipped stem like resnet20-fmnist)."""
    if is_checkpoint(name_or_path):
        return Path(name_or_path)
    shipped = shipped_models_dir() / name_or_path
    if is_checkpoint(shipped):
        return shipped
    return None
