"""Readers of the standard on-disk formats of image datasets (no downloads, no pickle).

Each reader returns ``(images, labels)``: ``images`` uint8 of shape N×C×H×W, ``labels`` int64 of
shape N. A file that is not what it claims to be raises ``DatasetFormatError`` naming the file and
what was wrong.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import numpy.typing as npt


class DatasetFormatError(ValueError):
    """A dataset file exists but its content is not in the expected format."""


class DatasetMissingError(FileNotFoundError):
    """The files of a dataset are not on this machine; the message says how to get them."""


def _open_maybe_gz(path: Path) -> bytes:
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except OSError as exc:
            raise DatasetFormatError(f"{path}: corrupt gzip stream ({exc})") from exc
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (MNIST / Fashion-MNIST), gzipped or not, into a numpy array."""
    path = Path(path)
    raw = _open_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic {raw[:4]!r})")
    dtype_code, ndim = raw[2], raw[3]
    dtypes: dict[int, npt.DTypeLike] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
                                        0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise DatasetFormatError(f"{path}: unknown IDX element type 0x{dtype_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(dtypes[dtype_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetFormatError(
            f"{path}: IDX body has {len(raw) - header} bytes, dims {dims} need {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def load_idx_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an IDX image file (N×H×W) and its label file (N) as a (uint8 N×1×H×W, int64 N) pair."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DatasetFormatError(f"{images_path}: expected N×H×W images, got shape {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(
            f"{labels_path}: {labels.shape} labels do not match {images.shape[0]} images")
    return (torch.from_numpy(images.astype(np.uint8)).unsqueeze(1).contiguous(),
            torch.from_numpy(labels.astype(np.int64)))


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR python batches that refuses every global except numpy array rebuilding.

    The CIFAR "python version" batches are pickled dicts of bytes, lists and numpy arrays; nothing
    else may be constructed, so a crafted file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DatasetFormatError(f"refusing to load {module}.{name} from a CIFAR batch file")


def read_cifar_batch(path: str | os.PathLike, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch file; returns (uint8 N×3×32×32, int64 N)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            obj = _NumpyOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except DatasetFormatError as exc:
        raise DatasetFormatError(f"{path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any parse failure is a format error
        raise DatasetFormatError(f"{path}: not a CIFAR python batch ({exc})") from exc
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a dict, found {type(obj).__name__}")
    obj = {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in obj or label_key not in obj:
        raise DatasetFormatError(f"{path}: missing 'data' or '{label_key}' (keys: {sorted(obj)})")
    data = np.asarray(obj["data"], dtype=np.uint8)
    labels = np.asarray(obj[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise DatasetFormatError(f"{path}: data {data.shape} / labels {labels.shape} are not CIFAR")
    return data.reshape(-1, 3, 32, 32), labels


def read_svhn_mat(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an SVHN cropped-digits .mat file (X: 32×32×3×N, y: N×1 with 10 meaning digit 0)."""
    path = Path(path)
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DatasetFormatError(
            "reading SVHN .mat files needs scipy: pip install 'ringlet[svhn]'") from exc
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DatasetFormatError(f"{path}: not a MATLAB .mat file ({exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise DatasetFormatError(f"{path}: missing 'X' or 'y'")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise DatasetFormatError(f"{path}: X {x.shape} / y {y.shape} are not SVHN cropped digits")
    y = np.where(y == 10, 0, y)
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(y)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def _read_image(file: Path, size) -> np.ndarray:
    from PIL import Image
    with Image.open(file) as im:
        arr = np.asarray(im.convert("RGB" if im.mode not in ("L", "I;16") else "L"))
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if size is not None and arr.shape != size:
        raise DatasetFormatError(f"{file}: size {arr.shape} differs from {size}")
    return arr


def _stack(images: list, labels: list, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not images:
        raise DatasetFormatError(f"{root}: no images found")
    return (torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in images]).astype(np.uint8)),
            torch.tensor(labels, dtype=torch.int64))


def read_image_folder(root: str | os.PathLike, classes: list[str] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read an ImageFolder tree ROOT/CLASS/*.png|*.jpg (or ROOT/CLASS/images/*, Tiny-ImageNet's
    training layout); classes sorted by name unless given. All images must share one size;
    returns (uint8 N×C×H×W, int64 N, class names)."""
    root = Path(root)
    try:
        import PIL  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise DatasetFormatError("reading an image folder needs Pillow (pip install pillow)") from exc
    classes = classes if classes is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetFormatError(f"{root}: no class sub-folders (expected ROOT/CLASS/image.png)")
    images, labels, size = [], [], None
    for label, cls in enumerate(classes):
        folder = root / cls / "images" if (root / cls / "images").is_dir() else root / cls
        if not folder.is_dir():
            raise DatasetFormatError(f"{root}: class folder {cls!r} is missing")
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in _IMAGE_SUFFIXES:
                images.append(_read_image(file, size))
                size = images[-1].shape
                labels.append(label)
    return (*_stack(images, labels, root), classes)


def read_annotated_folder(root: str | os.PathLike, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read Tiny-ImageNet's validation layout: ROOT/images/* with ROOT/val_annotations.txt
    (tab-separated: file name, class, box)."""
    root = Path(root)
    index = {c: i for i, c in enumerate(classes)}
    images, labels, size = [], [], None
    for n, line in enumerate((root / "val_annotations.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DatasetFormatError(f"{root / 'val_annotations.txt'} line {n}: unknown class in {line!r}")
        images.append(_read_image(root / "images" / parts[0], size))
        size = images[-1].shape
        labels.append(index[parts[1]])
    return _stack(images, labels, root)


def read_cifar_binary(path: str | os.PathLike, label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR "binary version" file: records of label byte(s) then 3072 pixel bytes (no pickle).

    CIFAR-10 has ``label_bytes=1``; CIFAR-100 has 2 (coarse, fine) and ``label_index`` picks one.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    rec = label_bytes + 3072
    if raw.size == 0 or raw.size % rec:
        raise DatasetFormatError(f"{path}: {raw.size} bytes is not a whole number of {rec}-byte CIFAR records")
    raw = raw.reshape(-1, rec)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), raw[:, label_index].astype(np.int64)
