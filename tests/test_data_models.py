"""Dataset loaders on files written in each standard format; the model zoo; checkpoints; training."""

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch

from ringlet.data import DatasetMissingError, load_dataset
from ringlet.data.formats import DatasetFormatError
from ringlet.models import MODEL_NAMES, build_model, count_relus
from ringlet.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ringlet.train.trainer import TrainConfig, fit


def _write_idx(path, array, gz=True):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[np.uint8], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def _rng(seed):
    return np.random.default_rng(seed)  # test data only


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loader(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    imgs = _rng(0).integers(0, 256, (7, 28, 28))
    labels = np.arange(7) % 10
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(folder / "t10k-labels-idx1-ubyte", labels, gz=False)
    ds = load_dataset(name, "test", tmp_path)
    assert ds.images.shape == (7, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(imgs.astype(np.uint8)))
    assert ds.labels.tolist() == labels.tolist()


def test_idx_corrupted_is_clear(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    _write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(3))
    with pytest.raises(DatasetFormatError, match="t10k-images-idx3-ubyte: .*IDX"):
        load_dataset("mnist", "test", tmp_path)


def test_cifar_binary_and_python_batches(tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    data = _rng(1).integers(0, 256, (4, 3072)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1])
    rec = np.concatenate([labels[:, None].astype(np.uint8), data], 1)
    (folder / "test_batch.bin").write_bytes(rec.tobytes())
    ds = load_dataset("cifar10", "test", tmp_path)
    assert ds.images.shape == (4, 3, 32, 32) and ds.labels.tolist() == [3, 1, 4, 1]
    assert torch.equal(ds.images.reshape(4, -1), torch.from_numpy(data))
    # the python version (a pickled dict of numpy arrays) through the restricted unpickler
    (folder / "test_batch.bin").unlink()
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels.tolist()}, fh)
    ds2 = load_dataset("cifar10", "test", tmp_path)
    assert torch.equal(ds2.images, ds.images)


def test_cifar_python_batch_refuses_code(tmp_path):
    folder = tmp_path / "cifar10"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(DatasetFormatError, match="refusing to load builtins.print"):
        load_dataset("cifar10", "test", tmp_path)


def test_cifar100_binary(tmp_path):
    folder = tmp_path / "cifar100"
    folder.mkdir()
    data = _rng(2).integers(0, 256, (3, 3072)).astype(np.uint8)
    rec = np.concatenate([np.array([[1, 55], [2, 66], [3, 77]], dtype=np.uint8), data], 1)
    (folder / "test.bin").write_bytes(rec.tobytes())
    assert load_dataset("cifar100", "test", tmp_path).labels.tolist() == [55, 66, 77]


def test_svhn_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    (tmp_path / "svhn").mkdir()
    x = _rng(3).integers(0, 256, (32, 32, 3, 5)).astype(np.uint8)
    y = np.array([[10], [1], [2], [3], [10]])
    scipy_io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": y})
    ds = load_dataset("svhn", "test", tmp_path)
    assert ds.labels.tolist() == [0, 1, 2, 3, 0]
    assert torch.equal(ds.images[1], torch.from_numpy(x[:, :, :, 1].transpose(2, 0, 1).copy()))


def _png(path, value, size=64):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_trees_train_test_and_tiny_imagenet_val(tmp_path):
    root = tmp_path / "tiny-imagenet"
    for i, cls in enumerate(["n02", "n01"]):  # classes sort by name: n01 → 0, n02 → 1
        _png(root / "train" / cls / "images" / f"{cls}_0.JPEG", 10 * i)
        _png(root / "train" / cls / "images" / f"{cls}_1.png", 10 * i + 1)
    (root / "val" / "images").mkdir(parents=True)
    _png(root / "val" / "images" / "val_0.png", 7)
    _png(root / "val" / "images" / "val_1.png", 8)
    (root / "val" / "val_annotations.txt").write_text("val_0.png\tn02\t0\t0\t63\t63\n"
                                                      "val_1.png\tn01\t0\t0\t63\t63\n")
    train = load_dataset("tiny-imagenet", "train", tmp_path)
    assert train.images.shape == (4, 3, 64, 64) and train.labels.tolist() == [0, 0, 1, 1]
    assert train.images[2, 0, 0, 0] == 0 and train.images[0, 0, 0, 0] == 10  # n02 has value 0
    test = load_dataset("tiny-imagenet", "test", tmp_path)
    assert test.labels.tolist() == [1, 0] and test.images[0, 1, 5, 5] == 7
    # a plain ImageFolder test split is preferred over val/ when present
    _png(root / "test" / "n01" / "a.png", 3)
    _png(root / "test" / "n02" / "b.png", 4)
    assert load_dataset("tiny-imagenet", "test", tmp_path).labels.tolist() == [0, 1]
    _png(root / "test" / "n02" / "c.png", 4, size=32)
    with pytest.raises(DatasetFormatError, match="c.png: size"):
        load_dataset("tiny-imagenet", "test", tmp_path)


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetMissingError, match="DATA_DIR/cifar10/"):
        load_dataset("cifar10", "test", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", "test", tmp_path)


def test_synthetic_imagenet_is_imagenet_sized_and_calibration_takes_fewer_of_its_images():
    from ringlet.sources import CALIBRATION_VALUES, Inputs, public_calibration
    ds = load_dataset("synthetic-imagenet", "test")
    assert ds.synthetic and ds.images.shape == (64, 3, 224, 224) and ds.num_classes == 1000
    none = Inputs(torch.zeros(1), None, {}, None)
    x, where = public_calibration({}, none, "synthetic-imagenet")
    assert x.shape[0] == CALIBRATION_VALUES // (3 * 224 * 224) == 55 and "55 images" in where
    x, _ = public_calibration({}, none, "synthetic-cifar")
    assert x.shape[0] == 256


def test_synthetic_is_labelled_and_repeatable():
    a, b = load_dataset("synthetic-cifar", "test"), load_dataset("synthetic-cifar", "test")
    assert a.synthetic and a.images.shape == (10000, 3, 32, 32) and torch.equal(a.images, b.images)


@pytest.mark.parametrize("name,shape", [(n, s) for n in MODEL_NAMES for s in ((1, 28, 28), (3, 32, 32))])
def test_every_model_builds_and_runs(name, shape):
    model = build_model(name, shape).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_resnet18_relu_count_matches_paper():
    assert sum(count_relus(build_model("resnet18", (3, 32, 32)), (3, 32, 32)).values()) == 557_056


def test_training_step_lowers_loss_and_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)  # test data only
    ds = load_dataset("synthetic-cifar", "test").subset(torch.arange(256))
    ds = type(ds)("synthetic-cifar", "test", ds.images[:, :1, 2:30, 2:30].contiguous(), ds.labels % 2,
                  (0.5,), (0.25,), 10, True)
    model = build_model("fmnist-net", (1, 28, 28))
    x, y = ds.tensors()
    before = torch.nn.functional.cross_entropy(model(x), y).item()
    fit(model, ds, None, TrainConfig(epochs=3, batch=64, lr=0.05, augment=False), progress=False,
        log=lambda s: None)
    after = torch.nn.functional.cross_entropy(model(x), y).item()
    assert after < before
    save_checkpoint(tmp_path / "m", model, {"model": "fmnist-net", "input_shape": [1, 28, 28],
                                            "num_classes": 10})
    loaded, meta = load_checkpoint(tmp_path / "m.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert meta["model"] == "fmnist-net"


def test_corrupted_or_foreign_checkpoint_is_clear(tmp_path):
    model = build_model("svhn-net", (1, 28, 28))
    save_checkpoint(tmp_path / "m", model, {"model": "svhn-net", "input_shape": [1, 28, 28],
                                            "num_classes": 10})
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "x.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a ringlet checkpoint"):
        load_checkpoint(tmp_path / "x")
    # right format, wrong architecture
    save_checkpoint(tmp_path / "y", model, {"model": "fmnist-net", "input_shape": [1, 28, 28],
                                            "num_classes": 10})
    with pytest.raises(CheckpointError, match="do not fit model 'fmnist-net'"):
        load_checkpoint(tmp_path / "y")
