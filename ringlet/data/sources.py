"""Users' own inputs: arrays from .npy files, and the per-channel normalisation applied to pixels.

A normalisation is a pair ``(mean, std)`` of per-channel tuples for pixel values scaled to [0, 1]:
``x = (u8 / 255 - mean) / std``. Two sources are kept apart everywhere: the normalisation a model was
trained with (stored in its checkpoint) and the user's explicit override (``--normalize``, parsed by
``parse_normalize``). Only uint8 pixels are normalised; float arrays are the model's input as is.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ringlet.data.formats import DatasetFormatError

Normalization = tuple[tuple[float, ...], tuple[float, ...]]

_NORMALIZE_FORMS = ("'MEAN,STD' with MEAN and STD a float or per-channel floats separated by '/' "
                    "(e.g. 0.5,0.25 or 0.49/0.48/0.45,0.25/0.24/0.26); 'none' (pixels scaled to [0, 1] "
                    "only); 'raw' (pixel values 0..255 as floats)")


def parse_normalize(text: str | None) -> Normalization | None:
    """Parse a ``--normalize`` value into ``(mean, std)``; None (option not given) gives None.

    Forms: ``MEAN,STD`` (each a float or per-channel floats joined by ``/``), ``none`` = ((0,), (1,))
    and ``raw`` = ((0,), (1/255,)). Every std must be > 0 and every value finite; a one-value mean or
    std is broadcast to the channels later, otherwise both must have the same length.
    """
    if text is None:
        return None
    word = text.strip().lower()
    if word == "none":
        return (0.0,), (1.0,)
    if word == "raw":
        return (0.0,), (1.0 / 255.0,)
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"--normalize {text!r}: expected {_NORMALIZE_FORMS}")
    try:
        mean, std = (tuple(float(v) for v in part.split("/")) for part in parts)
    except ValueError:
        raise ValueError(f"--normalize {text!r}: not a number; expected {_NORMALIZE_FORMS}") from None
    if not all(math.isfinite(v) for v in mean + std):
        raise ValueError(f"--normalize {text!r}: values must be finite")
    if min(std) <= 0:
        raise ValueError(f"--normalize {text!r}: std must be > 0")
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise ValueError(f"--normalize {text!r}: {len(mean)} means but {len(std)} stds")
    return mean, std


def _floats(values, name: str, what: str) -> tuple[float, ...]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim > 1 or arr.size == 0:
        raise ValueError(f"{what}: {name} must be one value or one per channel, got {values!r}")
    return tuple(float(v) for v in arr.reshape(-1))


def per_channel(mean, std, channels: int, what: str = "normalisation") -> Normalization:
    """Check ``(mean, std)`` against ``channels``, broadcasting a single value; return float tuples."""
    mean, std = _floats(mean, "mean", what), _floats(std, "std", what)
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise ValueError(f"{what}: {len(values)} {name} values for {channels} channel(s); "
                             f"give one value or {channels}")
    mean = mean * channels if len(mean) == 1 else mean
    std = std * channels if len(std) == 1 else std
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise ValueError(f"{what}: mean {mean} / std {std} must be finite with std > 0")
    return mean, std


def normalize_pixels(images_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """Map uint8 images N×C×H×W to float32: scale to [0, 1], then ``(x - mean) / std`` per channel."""
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images_u8.float() / 255.0 - mean_t) / std_t


def channel_stats(images_u8, chunk: int = 1 << 22) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Compute the per-channel mean and (population) std of uint8 images N×C×H×W, scaled to [0, 1].

    Reads ``chunk`` elements at a time (whole images, at least one) into int64, so memory stays
    bounded; sums of values and squares are exact integers, so there is no cancellation.
    """
    images = torch.as_tensor(images_u8)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats: expected uint8 N×C×H×W with N ≥ 1, got {images.dtype} "
                         f"{tuple(images.shape)}")
    per_image = max(1, images[0].numel())
    step = max(1, chunk // per_image)
    channels = images.shape[1]
    s1, s2 = [0] * channels, [0] * channels
    for start in range(0, images.shape[0], step):
        part = images[start:start + step].to(torch.int64)
        sums, squares = part.sum((0, 2, 3)).tolist(), (part * part).sum((0, 2, 3)).tolist()
        s1 = [a + b for a, b in zip(s1, sums)]
        s2 = [a + b for a, b in zip(s2, squares)]
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = tuple(s / (n * 255.0) for s in s1)
    std = tuple(math.sqrt((q * n - s * s) / (n * n)) / 255.0 for s, q in zip(s1, s2))
    return mean, std


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # object arrays, or not a .npy file at all
        raise DatasetFormatError(f"{path}: not a plain .npy array ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - any other parse failure is a format error
        raise DatasetFormatError(f"{path}: cannot be read as a .npy array ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise DatasetFormatError(f"{path}: is an .npz archive; give one .npy array")
    return arr


def _first_bad(arr: np.ndarray) -> str:
    index = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
    return f"element {list(index)} is {arr[index]}"


def _load_labels(path: Path, n: int) -> np.ndarray:
    labels = np.asarray(_load_npy(path, "labels"))
    if labels.dtype.kind not in "iu":
        raise DatasetFormatError(f"{path}: labels have dtype {labels.dtype}; expected an integer dtype")
    if labels.ndim != 1:
        raise DatasetFormatError(f"{path}: labels have shape {labels.shape}; expected 1-D (N,)")
    if labels.shape[0] != n:
        hint = (" (the input array was read as one C×H×W sample; for N one-channel H×W images give "
                "N×1×H×W: arr[:, None])") if n == 1 and labels.shape[0] > 1 else ""
        raise DatasetFormatError(f"{path}: {labels.shape[0]} labels for {n} input samples{hint}")
    if labels.min() < 0:
        raise DatasetFormatError(f"{path}: label {int(labels.min())} at index "
                                 f"{int(np.argmin(labels))} is negative")
    if labels.max() > np.iinfo(np.int64).max:
        raise DatasetFormatError(f"{path}: label {labels.max()} does not fit in int64")
    return labels.astype(np.int64)


def load_arrays(input_path: str | os.PathLike, labels_path: str | os.PathLike | None = None,
                samples: int | None = None, normalization: Normalization | None = None, *,
                override: Normalization | None = None, input_shape=None,
                ) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Load model inputs (and labels) from .npy files; returns ``(x float32 N×C×H×W, y int64 N, info)``.

    ``input_path`` holds N×C×H×W or one C×H×W sample. A uint8 array is pixels: scaled to [0, 1] and
    normalised with ``override`` if given (the user's ``--normalize``), else with ``normalization``
    (the model's stored one), else left in [0, 1]. A float32/float64 array is the model's input and is
    taken as is: ``normalization`` is then ignored, and an ``override`` is an error. ``labels_path``
    holds N integers ≥ 0 (the caller checks them against the model's classes). ``samples`` keeps the
    first 1..N samples (None: all). Files are read with ``allow_pickle=False`` only.

    ``input_shape``: the model's per-sample shape, when known: an N×H×W array for a one-channel
    model is read as N×1×H×W (said in ``info["layout"]``), and channels-last (N×H×W×C) arrays
    or arrays of another shape are refused with the way to fix them. Pixels with no
    normalisation known are left in [0, 1] with an :class:`InputWarning`.
    """
    path = Path(input_path)
    arr = _load_npy(path, "input")
    pixels = arr.dtype == np.uint8
    if not pixels and not (arr.dtype.kind == "f" and arr.dtype.itemsize in (4, 8)):
        raise DatasetFormatError(f"{path}: dtype {arr.dtype} is not supported; give uint8 pixels "
                                 "(0..255, normalised here) or float32/float64 model inputs")
    if arr.ndim not in (3, 4):
        raise DatasetFormatError(f"{path}: shape {arr.shape} is neither N×C×H×W nor one C×H×W sample")
    batch, layout = _layout(path, arr, input_shape)
    total = batch.shape[0]
    if total == 0:
        raise DatasetFormatError(f"{path}: shape {arr.shape} holds no samples")
    n = total if samples is None else samples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= total:
        raise ValueError(f"--samples {samples}: {path} has {total} sample(s); give 1..{total}")
    labels = _load_labels(Path(labels_path), total)[:n] if labels_path is not None else None
    data = np.array(batch[:n])
    channels = data.shape[1]
    norm_info = None
    if pixels:
        chosen, source = (override, "override") if override is not None else (normalization, "model")
        if chosen is None:
            chosen, source = ((0.0,), (1.0,)), "none"
            warnings.warn(InputWarning(
                f"{path}: uint8 pixels are scaled to [0, 1] and not normalised: the model records no "
                f"normalisation and none was given; if it was trained on normalised inputs, pass "
                f"--normalize MEAN,STD (or float inputs already normalised)"), stacklevel=2)
        mean, std = per_channel(*chosen, channels, what=f"normalisation of {path} ({source})")
        x = normalize_pixels(torch.from_numpy(data), mean, std)
        norm_info = {"mean": list(mean), "std": list(std), "source": source}
    else:
        if override is not None:
            raise ValueError(f"{path}: float arrays ({arr.dtype}) are taken as model inputs, so "
                             "--normalize cannot apply; pass uint8 pixels to have them normalised")
        if not np.isfinite(data).all():
            bad = _first_bad(data[0] if arr.ndim == 3 else data)  # index as in the file
            raise DatasetFormatError(f"{path}: non-finite input, {bad}")
        x = torch.from_numpy(data.astype(np.float32, copy=False))
    y = torch.from_numpy(labels) if labels is not None else None
    info = {"input": str(path), "labels": str(labels_path) if labels_path is not None else None,
            "samples": int(n), "pixels": bool(pixels), "input_shape": list(data.shape[1:]),
            "normalization": norm_info, **({"layout": layout} if layout else {})}
    return x.contiguous(), y, info


class InputWarning(UserWarning):
    """Inputs taken in a way the user may not expect (said, never silent)."""


def _layout(path: Path, arr: np.ndarray, input_shape) -> tuple[np.ndarray, str | None]:
    """``arr`` as N×C×H×W for a model of per-sample ``input_shape`` (None: unknown), and a note
    when it was read otherwise than as it stands."""
    want = tuple(int(s) for s in input_shape) if input_shape is not None else None
    if want is None or len(want) != 3:
        return (arr[None] if arr.ndim == 3 else arr), None
    c, h, w = want
    if arr.ndim == 3:
        if tuple(arr.shape) == want:
            return arr[None], None
        if c == 1 and tuple(arr.shape[1:]) == (h, w):
            return arr[:, None], f"N×H×W {tuple(arr.shape)} read as N×1×H×W (the model takes one channel)"
        if tuple(arr.shape) == (h, w, c):
            raise DatasetFormatError(f"{path}: shape {arr.shape} looks like one H×W×C image (channels "
                                     f"last); the model takes C×H×W {want}: save arr.transpose(2, 0, 1)")
    elif tuple(arr.shape[1:]) == want:
        return arr, None
    elif tuple(arr.shape[1:]) == (h, w, c):
        raise DatasetFormatError(f"{path}: shape {arr.shape} looks like N×H×W×C (channels last); the "
                                 f"model takes N×C×H×W with C×H×W = {want}: save arr.transpose(0, 3, 1, 2)")
    raise DatasetFormatError(f"{path}: shape {arr.shape} does not hold samples of the model's input "
                             f"shape {want} (give N×{c}×{h}×{w}, one {c}×{h}×{w} sample"
                             f"{f', or N×{h}×{w}' if c == 1 else ''})")


def model_normalization(meta: dict):
    """(mean, std) a model's metadata records for its inputs, or None."""
    norm = meta.get("normalization")
    return (tuple(norm["mean"]), tuple(norm["std"])) if norm else None
