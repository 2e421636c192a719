"""Users' own ImageFolder trees, the dataset named ``imagefolder``.

Layout: ``DIR/train/CLASS/*.{png,jpg,jpeg,bmp,gif,webp}``; the test split from ``DIR/test/CLASS/*``,
else ``DIR/val/CLASS/*``. ``DIR`` is the tree root itself (other datasets live in ``DATA_DIR/NAME``).
Classes are the sorted folder names of the training split (of the test split when there is no
``train/``); files with other suffixes and names starting with ``.`` are skipped. The normalisation is
the per-channel mean/std of the training split's pixels, so loading the test split reads the training
split too; a tree without ``train/`` leaves pixels in [0, 1] (mean 0, std 1): statistics are never taken
from the inputs being classified (give ``--normalize`` or a model that stores its normalisation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ringlet.data.formats import DatasetFormatError, DatasetMissingError
from ringlet.data.sources import channel_stats

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_GRAY_MODES = ("L", "1")


class FolderSplit(NamedTuple):
    """One split read from disk: uint8 N×C×H×W images, int64 labels, and files for messages."""

    images: np.ndarray
    labels: np.ndarray
    first: Path  # the first image read (its size is the split's size)
    colour: Path | None  # the first image that is not grayscale, if any


def class_folders(split_dir: Path) -> list[str]:
    """Return the sorted names of the class sub-folders of one split folder."""
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DatasetFormatError(f"{split_dir}: no class sub-folders (expected {split_dir}/CLASS/image.png)")
    return names


def _check_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
        raise ValueError(f"image_size {image_size!r}: expected two positive integers (H, W)")
    return int(size[0]), int(size[1])


def _read_image(file: Path, image_size: tuple[int, int] | None) -> tuple[np.ndarray, bool]:
    """Read one image as H×W (grayscale) or H×W×3 (RGB) uint8, resized bilinearly if asked."""
    from PIL import Image
    im: Image.Image  # the opened file, then its converted copy
    try:
        with Image.open(file) as im:
            n_frames = getattr(im, "n_frames", 1)  # multi-frame formats only (Pillow's stubs lack it)
            if n_frames > 1:
                raise DatasetFormatError(f"{file}: has {n_frames} frames; only still images are read")
            if im.mode.startswith(("I", "F")):
                raise DatasetFormatError(f"{file}: mode {im.mode} (more than 8 bits per channel) is not "
                                         "supported; save the image with 8 bits per channel")
            gray = im.mode in _GRAY_MODES
            im = im.convert("L" if gray else "RGB")
            if image_size is not None and im.size != (image_size[1], image_size[0]):
                im = im.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8), gray
    except DatasetFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure names the file
        raise DatasetFormatError(f"{file}: cannot be read as an image ({exc})") from exc


def _size_error(a: Path, a_shape, b: Path, b_shape) -> DatasetFormatError:
    return DatasetFormatError(
        f"images differ in size: {a} is {a_shape[0]}×{a_shape[1]} (H×W), "
        f"{b} is {b_shape[0]}×{b_shape[1]}; all images must share one size, "
        "or give --image-size H,W to resize them all")


def read_split(split_dir: Path, classes: list[str], image_size=None) -> FolderSplit:
    """Read ``split_dir/CLASS/*`` with labels by position in ``classes``; one channel iff all grayscale."""
    size = _check_size(image_size)
    index = {c: i for i, c in enumerate(classes)}
    arrays: list[np.ndarray] = []
    grays: list[bool] = []
    labels: list[int] = []
    files: list[Path] = []
    for cls in class_folders(split_dir):
        if cls not in index:
            raise DatasetFormatError(f"{split_dir / cls}: class {cls!r} is not a training class "
                                     f"(training classes: {', '.join(classes)})")
        folder = split_dir / cls
        found = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DatasetFormatError(f"{folder}: empty class folder (no {'/'.join(IMAGE_SUFFIXES)} images)")
        for file in found:
            arr, gray = _read_image(file, size)
            if arrays and arr.shape[:2] != arrays[0].shape[:2]:
                raise _size_error(files[0], arrays[0].shape, file, arr.shape)
            arrays.append(arr)
            grays.append(gray)
            labels.append(index[cls])
            files.append(file)
    channels = 1 if all(grays) else 3
    height, width = arrays[0].shape[:2]
    images = np.empty((len(arrays), channels, height, width), dtype=np.uint8)
    for i, arr in enumerate(arrays):
        images[i] = arr if arr.ndim == 2 else arr.transpose(2, 0, 1)  # grayscale repeats into RGB
    colour = next((f for f, g in zip(files, grays) if not g), None)
    return FolderSplit(images, np.asarray(labels, dtype=np.int64), files[0], colour)


def _test_dir(root: Path) -> Path:
    for name in ("test", "val"):
        if (root / name).is_dir():
            return root / name
    raise DatasetMissingError(f"dataset 'imagefolder': no test split in {root} "
                              f"(looked for {root / 'test'}/CLASS/* and {root / 'val'}/CLASS/*)")


def _match(test: FolderSplit, train: FolderSplit) -> np.ndarray:
    """Return the test images with the training split's channels; sizes must agree."""
    if test.images.shape[2:] != train.images.shape[2:]:
        raise _size_error(train.first, train.images.shape[2:], test.first, test.images.shape[2:])
    if train.images.shape[1] == test.images.shape[1]:
        return test.images
    if train.images.shape[1] == 1:
        raise DatasetFormatError(f"{test.colour}: a colour image, but every training image is grayscale "
                                 f"(e.g. {train.first}); convert the test images to grayscale")
    return np.repeat(test.images, 3, axis=1)


def load_image_folder(root: str | os.PathLike | None, split: str, image_size=None
                      ) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple, tuple]:
    """Read one split of an ImageFolder tree; returns (uint8 images, int64 labels, classes, mean, std).

    ``image_size=(H, W)`` resizes every image (PIL, bilinear); without it all images of the tree must
    share one size. The mean/std are those of the training split (see the module docstring).
    """
    if root is None:
        raise DatasetMissingError("dataset 'imagefolder' needs --data-dir: the folder holding "
                                  "train/CLASS/* and test/CLASS/* (or val/CLASS/*)")
    root = Path(root)
    if not root.is_dir():
        raise DatasetMissingError(f"dataset 'imagefolder': folder {root} not found")
    train_dir = root / "train"
    if split == "train" and not train_dir.is_dir():
        raise DatasetMissingError(f"dataset 'imagefolder': no training split {train_dir}/CLASS/*")
    train = None
    stats_from: FolderSplit | None  # where the normalisation comes from: the training split only
    if train_dir.is_dir():
        classes = class_folders(train_dir)
        train = read_split(train_dir, classes, image_size)
    if split == "train":
        assert train is not None  # the training split exists (checked above)
        images, labels, stats_from = train.images, train.labels, train
    else:
        test_dir = _test_dir(root)
        classes = classes if train is not None else class_folders(test_dir)
        test = read_split(test_dir, classes, image_size)
        images = _match(test, train) if train is not None else test.images
        labels, stats_from = test.labels, train
    if stats_from is None:  # never statistics of the inputs being classified: pixels in [0, 1]
        channels = images.shape[1]
        return torch.from_numpy(images), torch.from_numpy(labels), tuple(classes), (0.0,) * channels, \
            (1.0,) * channels
    mean, std = channel_stats(stats_from.images)
    if min(std) == 0:
        raise DatasetFormatError(f"{stats_from.first.parent.parent}: a channel has the same value in every "
                                 f"pixel (std {std}); its normalisation is undefined")
    return torch.from_numpy(images), torch.from_numpy(labels), tuple(classes), mean, std
