"""The datasets ringlet knows by name, loaded into memory as uint8 images and int64 labels.

Names used everywhere (CLI, configs, reports): ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``,
``svhn``, ``tiny-imagenet`` (any ImageFolder tree of 64×64 RGB images in 200 classes), ``synthetic-cifar``,
``synthetic-imagenet`` (3×224×224, 1000 classes, 256 + 64 generated images: ImageNet's size for cost
measurements), and ``imagefolder`` (the user's own ImageFolder tree of any size and classes, see
``ringlet.data.folders``).
Nothing is ever downloaded: Fashion-MNIST comes from the Debian package
``dataset-fashion-mnist``; the others from ``DATA_DIR/NAME``, with ``DATA_DIR`` given by ``data_dir`` or
``$RINGLET_DATA`` — except ``imagefolder``, whose ``data_dir`` is the tree root itself.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ringlet.data import folders, formats
from ringlet.data.formats import DatasetMissingError
from ringlet.data.sources import normalize_pixels, per_channel

DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet", "synthetic-cifar",
                 "synthetic-imagenet", "imagefolder")
SYNTHETIC = ("synthetic-cifar", "synthetic-imagenet")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# per-channel mean / std of the training split (pixel values scaled to [0, 1])
_NORMALISATION = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "tiny-imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    "synthetic-cifar": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    "synthetic-imagenet": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
}
_NUM_CLASSES = {"fashion-mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10,
                "tiny-imagenet": 200, "synthetic-cifar": 10, "synthetic-imagenet": 1000}
_SHAPES = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
           "cifar100": (3, 32, 32), "svhn": (3, 32, 32), "tiny-imagenet": (3, 64, 64),
           "synthetic-cifar": (3, 32, 32), "synthetic-imagenet": (3, 224, 224)}
_DIGITS = tuple(str(d) for d in range(10))
_CLASSES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
    "mnist": _DIGITS,
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "svhn": _DIGITS,
}

_HOW_TO_GET = {
    "fashion-mnist": "install the Debian package: apt-get install -y dataset-fashion-mnist "
                     f"(files in {FASHION_MNIST_DIR}), or put the four IDX files "
                     "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in DATA_DIR/fashion-mnist/",
    "mnist": "put the four IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] in "
             "DATA_DIR/mnist/",
    "cifar10": "put the CIFAR-10 batches in DATA_DIR/cifar10/: the binary version "
               "(data_batch_1..5.bin, test_batch.bin) or the python version "
               "(data_batch_1..5, test_batch)",
    "cifar100": "put the CIFAR-100 files in DATA_DIR/cifar100/: binary (train.bin, test.bin) or "
                "python (train, test)",
    "svhn": "put train_32x32.mat and test_32x32.mat (SVHN cropped digits) in DATA_DIR/svhn/",
    "tiny-imagenet": "unpack tiny-imagenet-200 as DATA_DIR/tiny-imagenet/ (train/CLASS/images/*.JPEG and "
                     "val/images + val/val_annotations.txt), or give any ImageFolder tree "
                     "DATA_DIR/tiny-imagenet/{train,test}/CLASS/*.png of 64×64 RGB images",
}


@dataclass(frozen=True)
class Dataset:
    """A dataset split in memory: uint8 images N×C×H×W, int64 labels N, and its normalisation.

    ``classes`` are the class names in label order (None when the dataset has no names).
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    synthetic: bool = False
    classes: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        """Map uint8 images to float32, scaled to [0, 1] then standardised per channel; float
        images (:meth:`from_tensors`) are the model's inputs already and come back as they are."""
        if images_u8.is_floating_point():
            return images_u8.float()
        return normalize_pixels(images_u8, self.mean, self.std)

    @classmethod
    def from_tensors(cls, x: torch.Tensor, y: torch.Tensor, name: str = "arrays",
                     split: str = "train", classes=None) -> Dataset:
        """A split of the user's own float inputs (already normalised) and integer labels."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2:
            raise ValueError(f"{name}: inputs must be a float tensor N×…, got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        y = torch.as_tensor(y)
        if y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
            raise ValueError(f"{name}: labels must be N = {x.shape[0]} integers, got "
                             f"{y.dtype} {tuple(y.shape)}")
        if y.numel() and int(y.min()) < 0:
            raise ValueError(f"{name}: labels must be non-negative, got {int(y.min())}")
        num = len(classes) if classes else int(y.max()) + 1 if y.numel() else 0
        channels = x.shape[1]
        return cls(name, split, x.float(), y.to(torch.int64), (0.0,) * channels, (1.0,) * channels,
                   num, classes=tuple(classes) if classes else None)

    def with_normalization(self, mean, std) -> Dataset:
        """Return this split with another per-channel mean/std (one value is broadcast to all channels)."""
        mean, std = per_channel(mean, std, self.input_shape[0], what=f"dataset {self.name} normalisation")
        return replace(self, mean=mean, std=std)

    def tensors(self, samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``samples`` (all if None) normalised images and their labels."""
        n = len(self) if samples is None else samples
        if n < 1 or n > len(self):
            raise ValueError(f"--samples {n}: dataset {self.name}/{self.split} has {len(self)} images")
        return self.normalize(self.images[:n]), self.labels[:n]

    def subset(self, index: torch.Tensor) -> Dataset:
        """Return the images and labels at ``index``, with the same normalisation and classes."""
        return replace(self, images=self.images[index], labels=self.labels[index])


def dataset_info(name: str) -> dict:
    """Shape, classes and normalisation of a named dataset, without loading it.

    ``imagefolder`` raises ValueError: its shape, classes and normalisation come from the folder, so
    load it and read ``input_shape``, ``classes`` and ``mean``/``std`` of the returned ``Dataset``.
    """
    _check_name(name)
    if name == "imagefolder":
        raise ValueError("dataset_info('imagefolder'): shape, classes and normalisation depend on the "
                         "folder; use load_dataset('imagefolder', 'train', DIR) and read its input_shape, "
                         "classes, mean and std")
    mean, std = _NORMALISATION[name]
    classes = _CLASSES.get(name)
    return {"name": name, "input_shape": list(_SHAPES[name]), "num_classes": _NUM_CLASSES[name],
            "mean": list(mean), "std": list(std), "classes": list(classes) if classes else None}


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")


def _data_root(data_dir: str | os.PathLike | None) -> Path | None:
    root = data_dir if data_dir is not None else os.environ.get("RINGLET_DATA")
    return Path(root) if root else None


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing(name: str, looked: list[Path]) -> DatasetMissingError:
    where = ", ".join(str(p) for p in looked) or "(no data folder given: use --data-dir or RINGLET_DATA)"
    return DatasetMissingError(f"dataset {name!r} not found (looked in {where}); "
                               f"to get it, {_HOW_TO_GET[name]}")


def _load_idx_dataset(name: str, split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    folders = [root / name] if root else []
    if name == "fashion-mnist":
        folders.append(FASHION_MNIST_DIR)
    for folder in folders:
        images = _find(folder, f"{prefix}-images-idx3-ubyte")
        labels = _find(folder, f"{prefix}-labels-idx1-ubyte")
        if images and labels:
            return formats.load_idx_pair(images, labels)
    raise _missing(name, folders)


def _load_cifar(name: str, split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    if root is None:
        raise _missing(name, [])
    folder = root / name
    if name == "cifar10":
        stems = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_bytes, label_index, label_key = 1, 0, "labels"
    else:
        stems = ["train"] if split == "train" else ["test"]
        label_bytes, label_index, label_key = 2, 1, "fine_labels"
    binary = [folder / f"{s}.bin" for s in stems]
    python = [folder / s for s in stems]
    if all(p.is_file() for p in binary):
        parts = [formats.read_cifar_binary(p, label_bytes, label_index) for p in binary]
    elif all(p.is_file() for p in python):
        parts = [formats.read_cifar_batch(p, label_key) for p in python]
    else:
        raise _missing(name, [folder])
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(images), torch.from_numpy(labels)


def _load_svhn(split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    path = root / "svhn" / f"{split}_32x32.mat" if root else None
    if path is None or not path.is_file():
        raise _missing("svhn", [path.parent] if path else [])
    return formats.read_svhn_mat(path)


def _load_image_tree(name: str, split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """An ImageFolder tree: FOLDER/train/CLASS/…; the test split from FOLDER/test/CLASS/… or
    Tiny-ImageNet's FOLDER/val/ (images + val_annotations.txt), with the training split's classes."""
    folder = root / name if root else None
    if folder is None or not (folder / "train").is_dir():
        raise _missing(name, [folder] if folder else [])
    classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    if split == "train":
        images, labels, _ = formats.read_image_folder(folder / "train", classes)
    elif (folder / "test").is_dir():
        images, labels, _ = formats.read_image_folder(folder / "test", classes)
    elif (folder / "val" / "val_annotations.txt").is_file():
        images, labels = formats.read_annotated_folder(folder / "val", classes)
    else:
        raise _missing(name, [folder / "test", folder / "val"])
    return images, labels, tuple(classes)


def synthetic_cifar(split: str, n: int | None = None, shape=(3, 32, 32),
                    classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic images of ``shape`` (CIFAR's by default; labelled as such): for cost
    measurements only.

    Values are a fixed function of the index (not a secret and not random), so runs are repeatable;
    the labels carry no meaning.
    """
    n = n if n is not None else (50000 if split == "train" else 10000)
    size = n * math.prod(shape)
    offset = 0 if split == "train" else 7
    # (i·2654435761 + offset) mod 251 depends on i mod 251 only: one period, tiled
    period = ((torch.arange(251, dtype=torch.int64) * 2654435761 + offset) % 251).to(torch.uint8)
    images = period.repeat(size // 251 + 1)[:size].view(n, *shape)
    labels = torch.arange(n, dtype=torch.int64) % classes
    return images, labels


def load_dataset(name: str, split: str = "test", data_dir: str | os.PathLike | None = None,
                 image_size: tuple[int, int] | None = None) -> Dataset:
    """Load one split (``train`` or ``test``) of a named dataset into memory.

    For ``imagefolder``, ``data_dir`` is the tree root itself (``$RINGLET_DATA`` is not used) and
    ``image_size=(H, W)`` resizes every image; other datasets have a fixed size and refuse it.
    """
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    classes: tuple[str, ...] | None
    if name == "imagefolder":
        images, labels, classes, mean, std = folders.load_image_folder(data_dir, split, image_size)
        return Dataset(name, split, images, labels, mean, std, len(classes), classes=classes)
    if image_size is not None:
        raise ValueError(f"image_size applies to dataset 'imagefolder' only; {name} images are "
                         f"{_SHAPES[name][1]}×{_SHAPES[name][2]}")
    root = _data_root(data_dir)
    classes = _CLASSES.get(name)
    if name in ("fashion-mnist", "mnist"):
        images, labels = _load_idx_dataset(name, split, root)
    elif name in ("cifar10", "cifar100"):
        images, labels = _load_cifar(name, split, root)
    elif name == "svhn":
        images, labels = _load_svhn(split, root)
    elif name == "tiny-imagenet":
        images, labels, classes = _load_image_tree(name, split, root)
    elif name == "synthetic-imagenet":  # ImageNet's size for cost measurements: 256 / 64 images
        images, labels = synthetic_cifar(split, 256 if split == "train" else 64, _SHAPES[name], 1000)
    else:
        images, labels = synthetic_cifar(split)
    if tuple(images.shape[1:]) != _SHAPES[name]:
        raise formats.DatasetFormatError(
            f"dataset {name}: images have shape {tuple(images.shape[1:])}, expected {_SHAPES[name]}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= _NUM_CLASSES[name]):
        raise formats.DatasetFormatError(
            f"dataset {name}: labels outside 0..{_NUM_CLASSES[name] - 1}")
    if classes is not None and len(classes) != _NUM_CLASSES[name]:
        classes = None  # e.g. a small tiny-imagenet tree: its folder names do not name all classes
    mean, std = _NORMALISATION[name]
    return Dataset(name, split, images, labels, mean, std, _NUM_CLASSES[name],
                   synthetic=(name in SYNTHETIC), classes=classes)
