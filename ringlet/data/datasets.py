"""The datasets ringlet knows by name, loaded into memory as uint8 images and int64 labels.

Names used everywhere (CLI, configs, reports): ``fashion-mnist``, ``mnist``, ``cifar10``, ``cifar100``,
``svhn``, ``tiny-imagenet`` (any ImageFolder tree of 64×64 RGB images in 200 classes), ``synthetic-cifar``.
Nothing is ever downloaded: Fashion-MNIST comes from the Debian package
``dataset-fashion-mnist``; the others from a folder given by ``data_dir`` or ``$RINGLET_DATA``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ringlet.data import formats

DATASET_NAMES = ("fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet", "synthetic-cifar")
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
}
_NUM_CLASSES = {"fashion-mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10,
                "tiny-imagenet": 200, "synthetic-cifar": 10}
_SHAPES = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32),
           "cifar100": (3, 32, 32), "svhn": (3, 32, 32), "tiny-imagenet": (3, 64, 64),
           "synthetic-cifar": (3, 32, 32)}

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


class DatasetMissingError(FileNotFoundError):
    """The files of a named dataset are not on this machine; the message says how to get them."""


@dataclass(frozen=True)
class Dataset:
    """A dataset split in memory: uint8 images N×C×H×W, int64 labels N, and its normalisation."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    synthetic: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 images → float32, scaled to [0, 1] then standardised per channel."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images_u8.float() / 255.0 - mean) / std

    def tensors(self, samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``samples`` (all if None) normalised images and their labels."""
        n = len(self) if samples is None else samples
        if n < 1 or n > len(self):
            raise ValueError(f"--samples {n}: dataset {self.name}/{self.split} has {len(self)} images")
        return self.normalize(self.images[:n]), self.labels[:n]

    def subset(self, index: torch.Tensor) -> "Dataset":
        return Dataset(self.name, self.split, self.images[index], self.labels[index], self.mean,
                       self.std, self.num_classes, self.synthetic)


def dataset_info(name: str) -> dict:
    """Shape, classes and normalisation of a named dataset, without loading it."""
    _check_name(name)
    mean, std = _NORMALISATION[name]
    return {"name": name, "input_shape": list(_SHAPES[name]), "num_classes": _NUM_CLASSES[name],
            "mean": list(mean), "std": list(std)}


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


def _load_image_tree(name: str, split: str, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
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
    return images, labels


def synthetic_cifar(split: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic CIFAR-shaped images (labelled as such): for cost measurements only.

    Values are a fixed function of the index (not a secret and not random), so runs are repeatable;
    the labels carry no meaning.
    """
    n = n if n is not None else (50000 if split == "train" else 10000)
    idx = torch.arange(n * 3 * 32 * 32, dtype=torch.int64)
    offset = 0 if split == "train" else 7
    images = ((idx * 2654435761 + offset) % 251).to(torch.uint8).view(n, 3, 32, 32)
    labels = torch.arange(n, dtype=torch.int64) % 10
    return images, labels


def load_dataset(name: str, split: str = "test", data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load one split (``train`` or ``test``) of a named dataset into memory."""
    _check_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")
    root = _data_root(data_dir)
    if name in ("fashion-mnist", "mnist"):
        images, labels = _load_idx_dataset(name, split, root)
    elif name in ("cifar10", "cifar100"):
        images, labels = _load_cifar(name, split, root)
    elif name == "svhn":
        images, labels = _load_svhn(split, root)
    elif name == "tiny-imagenet":
        images, labels = _load_image_tree(name, split, root)
    else:
        images, labels = synthetic_cifar(split)
    if tuple(images.shape[1:]) != _SHAPES[name]:
        raise formats.DatasetFormatError(
            f"dataset {name}: images have shape {tuple(images.shape[1:])}, expected {_SHAPES[name]}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= _NUM_CLASSES[name]):
        raise formats.DatasetFormatError(
            f"dataset {name}: labels outside 0..{_NUM_CLASSES[name] - 1}")
    mean, std = _NORMALISATION[name]
    return Dataset(name, split, images, labels, mean, std, _NUM_CLASSES[name],
                   synthetic=(name == "synthetic-cifar"))
