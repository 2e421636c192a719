"""Users' own data: ImageFolder trees of any size, normalisation overrides, and .npy input arrays."""

import numpy as np
import pytest
import torch

from ringlet.data import (
    Dataset,
    DatasetFormatError,
    DatasetMissingError,
    channel_stats,
    dataset_info,
    load_arrays,
    load_dataset,
    parse_normalize,
)
from ringlet.data.sources import InputWarning

CLASSES = ["cat", "ant", "bee"]  # sorted: ant → 0, bee → 1, cat → 2


def _rng(seed):
    return np.random.default_rng(seed)  # test data only


def _save(path, array, mode=None):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _tree(root, split="train", gray=False, size=(10, 12), per_class=4, seed=0, classes=CLASSES):
    """Write SPLIT/CLASS/i.png with random pixels; return {(class, i): H×W[×3] array}."""
    rng, written = _rng(seed), {}
    for cls in classes:
        for i in range(per_class):
            arr = rng.integers(0, 256, size if gray else (*size, 3), dtype=np.uint8)
            _save(root / split / cls / f"{i}.png", arr)
            written[cls, i] = arr
    return written


def _small(n=4):
    images = torch.from_numpy(_rng(9).integers(0, 256, (n, 3, 5, 5), dtype=np.uint8))
    return Dataset("synthetic-cifar", "test", images, torch.arange(n) % 10, (0.5,) * 3, (0.25,) * 3, 10, True)


def _chw(arr):
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def test_imagefolder_classes_labels_and_train_statistics(tmp_path):
    written = _tree(tmp_path)
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    ds = load_dataset("imagefolder", "train", tmp_path)
    assert ds.classes == ("ant", "bee", "cat") and ds.num_classes == 3
    assert ds.images.shape == (12, 3, 10, 12) and ds.input_shape == (3, 10, 12)
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(ds.images[5], torch.from_numpy(_chw(written["bee", 1])))
    pixels = np.stack([_chw(written[c, i]) for c in sorted(CLASSES) for i in range(4)]) / 255.0
    assert np.allclose(ds.mean, pixels.mean((0, 2, 3)), atol=1e-12)
    assert np.allclose(ds.std, pixels.std((0, 2, 3)), atol=1e-12)
    x, y = ds.tensors(2)
    assert torch.allclose(x, (torch.from_numpy(pixels[:2]).float() - torch.tensor(ds.mean).view(1, 3, 1, 1))
                          / torch.tensor(ds.std).view(1, 3, 1, 1), atol=1e-5)


def test_imagefolder_test_split_uses_train_classes_and_statistics(tmp_path):
    _tree(tmp_path)
    _tree(tmp_path, "val", per_class=1, seed=1, classes=["bee", "cat"])
    train = load_dataset("imagefolder", "train", tmp_path)
    val = load_dataset("imagefolder", "test", tmp_path)
    assert val.labels.tolist() == [1, 2] and val.classes == train.classes and val.num_classes == 3
    assert (val.mean, val.std) == (train.mean, train.std)
    _tree(tmp_path, "test", per_class=1, seed=2, classes=["ant"])  # test/ is preferred over val/
    assert load_dataset("imagefolder", "test", tmp_path).labels.tolist() == [0]
    _tree(tmp_path, "test", per_class=1, seed=3, classes=["dog"])
    with pytest.raises(DatasetFormatError, match=r"test/dog: class 'dog' is not a training class"):
        load_dataset("imagefolder", "test", tmp_path)


def test_imagefolder_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetMissingError, match="needs --data-dir"):
        load_dataset("imagefolder", "train", None)
    with pytest.raises(DatasetMissingError, match="no training split"):
        load_dataset("imagefolder", "train", tmp_path)
    _tree(tmp_path)
    with pytest.raises(DatasetMissingError, match="no test split"):
        load_dataset("imagefolder", "test", tmp_path)
    (tmp_path / "train" / "dog").mkdir()
    with pytest.raises(DatasetFormatError, match=r"train/dog: empty class folder"):
        load_dataset("imagefolder", "train", tmp_path)
    with pytest.raises(ValueError, match="depend on the folder"):
        dataset_info("imagefolder")
    with pytest.raises(ValueError, match="image_size applies to dataset 'imagefolder' only"):
        load_dataset("synthetic-cifar", "test", image_size=(16, 16))


def test_imagefolder_mixed_sizes_error_and_resize(tmp_path):
    _tree(tmp_path)
    _save(tmp_path / "train" / "cat" / "9.png", np.zeros((7, 5, 3), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"ant/0.png is 10×12 \(H×W\), .*cat/9.png is 7×5; "
                                                 r".*--image-size H,W"):
        load_dataset("imagefolder", "train", tmp_path)
    ds = load_dataset("imagefolder", "train", tmp_path, image_size=(8, 6))
    assert ds.images.shape == (13, 3, 8, 6)
    from PIL import Image
    with Image.open(tmp_path / "train" / "ant" / "0.png") as im:
        expect = np.array(im.resize((6, 8), Image.Resampling.BILINEAR))
    assert torch.equal(ds.images[0], torch.from_numpy(_chw(expect)))
    # a test split of another size is refused too, unless resized
    (tmp_path / "train" / "cat" / "9.png").unlink()
    _tree(tmp_path, "test", per_class=1, size=(9, 9), classes=["ant"])
    with pytest.raises(DatasetFormatError, match=r"is 10×12 .* is 9×9"):
        load_dataset("imagefolder", "test", tmp_path)
    assert load_dataset("imagefolder", "test", tmp_path, image_size=(8, 6)).images.shape == (1, 3, 8, 6)


def test_imagefolder_grayscale_is_one_channel_and_rgba_is_rgb(tmp_path):
    written = _tree(tmp_path, gray=True)
    ds = load_dataset("imagefolder", "train", tmp_path)
    assert ds.images.shape == (12, 1, 10, 12) and len(ds.mean) == 1
    assert torch.equal(ds.images[0, 0], torch.from_numpy(written["ant", 0]))
    rgba = _rng(5).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    _save(tmp_path / "train" / "bee" / "rgba.png", rgba, "RGBA")
    mixed = load_dataset("imagefolder", "train", tmp_path)
    assert mixed.images.shape == (13, 3, 10, 12) and len(mixed.std) == 3
    assert torch.equal(mixed.images[4], torch.from_numpy(np.repeat(written["bee", 0][None], 3, 0)))
    rgba_row = [i for i, lab in enumerate(mixed.labels.tolist()) if lab == 1][-1]  # rgba.png sorts last
    assert torch.equal(mixed.images[rgba_row], torch.from_numpy(rgba[:, :, :3].transpose(2, 0, 1)))


def test_channel_stats_matches_numpy_in_chunks():
    images = _rng(6).integers(0, 256, (7, 3, 5, 4), dtype=np.uint8)
    mean, std = channel_stats(torch.from_numpy(images), chunk=61)  # one image per chunk
    assert np.allclose(mean, (images / 255.0).mean((0, 2, 3)), atol=1e-12)
    assert np.allclose(std, (images / 255.0).std((0, 2, 3)), atol=1e-12)
    with pytest.raises(ValueError, match="expected uint8 N×C×H×W"):
        channel_stats(images.astype(np.float32))


def test_with_normalization_broadcasts_and_checks_channels():
    ds = _small()
    assert ds.with_normalization(0.5, 0.25).mean == (0.5, 0.5, 0.5)
    other = ds.with_normalization((0.1, 0.2, 0.3), (0.5,))
    assert other.mean == (0.1, 0.2, 0.3) and other.std == (0.5, 0.5, 0.5) and ds.mean == (0.5, 0.5, 0.5)
    assert torch.allclose(other.tensors()[0][:, 2], (ds.images[:, 2].float() / 255 - 0.3) / 0.5)
    with pytest.raises(ValueError, match="2 mean values for 3 channel"):
        ds.with_normalization((0.1, 0.2), 0.5)
    with pytest.raises(ValueError, match="std > 0"):
        ds.with_normalization(0.5, 0.0)


def test_parse_normalize_forms_and_errors():
    assert parse_normalize(None) is None
    assert parse_normalize("0.5,0.25") == ((0.5,), (0.25,))
    assert parse_normalize("0.49/0.48/0.45,0.25/0.24/0.26") == ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    assert parse_normalize("0.5,0.2/0.3/0.4") == ((0.5,), (0.2, 0.3, 0.4))
    assert parse_normalize(" None ") == ((0.0,), (1.0,))
    assert parse_normalize("raw") == ((0.0,), (1 / 255,))
    for text, message in [("0.5", "expected 'MEAN,STD'"), ("a,b", "not a number"),
                          ("0.5,0", "std must be > 0"), ("0.5,-1", "std must be > 0"),
                          ("0.1/0.2,0.1/0.2/0.3", "2 means but 3 stds"), ("nan,1", "must be finite"),
                          ("", "expected 'MEAN,STD'"), ("0.5,0.2,0.1", "'none'")]:
        with pytest.raises(ValueError, match=message) as err:
            parse_normalize(text)
        assert repr(text) in str(err.value)
    ds = _small(2)
    raw = ds.with_normalization(*parse_normalize("raw")).tensors()[0]
    assert torch.allclose(raw, ds.images.float(), atol=1e-4)


def test_load_arrays_uint8_pixels_are_normalised(tmp_path):
    images = _rng(7).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", np.array([0, 1, 2, 1, 0], dtype=np.uint8))
    x, y, info = load_arrays(tmp_path / "x.npy", tmp_path / "y.npy", samples=3,
                             normalization=((0.5,), (0.25,)))
    assert x.dtype == torch.float32 and x.shape == (3, 3, 4, 4)
    assert torch.allclose(x, (torch.from_numpy(images[:3]).float() / 255 - 0.5) / 0.25)
    assert y.dtype == torch.int64 and y.tolist() == [0, 1, 2]
    assert info["pixels"] and info["samples"] == 3 and info["labels"].endswith("y.npy")
    assert info["normalization"]["source"] == "model"
    x2, _, info2 = load_arrays(tmp_path / "x.npy", normalization=((0.5,), (0.25,)),
                               override=parse_normalize("none"))
    assert torch.allclose(x2, torch.from_numpy(images).float() / 255) and info2["labels"] is None
    assert info2["normalization"]["source"] == "override"
    with pytest.warns(InputWarning, match="not normalised.*--normalize MEAN,STD"):
        x3, _, _ = load_arrays(tmp_path / "x.npy")  # no normalisation at all: [0, 1], said
    assert torch.equal(x3, x2)
    # same numbers as a Dataset with that normalisation
    ds = _small(2)
    np.save(tmp_path / "s.npy", ds.images.numpy())
    assert torch.equal(load_arrays(tmp_path / "s.npy", normalization=(ds.mean, ds.std))[0], ds.tensors()[0])


def test_load_arrays_float_and_single_sample(tmp_path):
    data = _rng(8).standard_normal((2, 4, 4)).astype(np.float64)
    np.save(tmp_path / "one.npy", data)
    x, y, info = load_arrays(tmp_path / "one.npy", normalization=((0.5,), (0.25,)))  # model's: ignored
    assert x.shape == (1, 2, 4, 4) and x.dtype == torch.float32 and y is None
    assert torch.equal(x[0], torch.from_numpy(data.astype(np.float32))) and not info["pixels"]
    with pytest.raises(ValueError, match="float arrays .* are taken as model inputs.*pass uint8 pixels"):
        load_arrays(tmp_path / "one.npy", override=((0.5,), (0.25,)))
    data[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(DatasetFormatError, match=r"nan.npy: non-finite input, element \[1, 2, 3\] is nan"):
        load_arrays(tmp_path / "nan.npy")


def test_load_arrays_rejects_bad_files(tmp_path):
    np.save(tmp_path / "i64.npy", np.zeros((2, 1, 3, 3), np.int64))
    with pytest.raises(DatasetFormatError, match="i64.npy: dtype int64 is not supported"):
        load_arrays(tmp_path / "i64.npy")
    np.save(tmp_path / "flat.npy", np.zeros((2, 9), np.float32))
    with pytest.raises(DatasetFormatError, match=r"flat.npy: shape \(2, 9\) is neither N×C×H×W"):
        load_arrays(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetFormatError, match="obj.npy: not a plain .npy array"):
        load_arrays(tmp_path / "obj.npy")
    with pytest.raises(FileNotFoundError, match="input file .*absent.npy not found"):
        load_arrays(tmp_path / "absent.npy")
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 2, 2), np.uint8))
    np.save(tmp_path / "y3.npy", np.zeros(3, np.int64))
    with pytest.raises(DatasetFormatError, match="y3.npy: 3 labels for 4 input samples"):
        load_arrays(tmp_path / "x.npy", tmp_path / "y3.npy")
    np.save(tmp_path / "yneg.npy", np.array([0, 1, -2, 0]))
    with pytest.raises(DatasetFormatError, match="label -2 at index 2 is negative"):
        load_arrays(tmp_path / "x.npy", tmp_path / "yneg.npy")
    np.save(tmp_path / "yf.npy", np.zeros(4, np.float32))
    with pytest.raises(DatasetFormatError, match="labels have dtype float32"):
        load_arrays(tmp_path / "x.npy", tmp_path / "yf.npy")
    with pytest.raises(ValueError, match="normalisation of .*x.npy \\(override\\): 3 mean values for 1"):
        load_arrays(tmp_path / "x.npy", override=((0.1, 0.2, 0.3), (1.0,)))


@pytest.mark.parametrize("samples", [-1, 0, 5])
def test_load_arrays_samples_out_of_range(tmp_path, samples):
    np.save(tmp_path / "x.npy", np.zeros((4, 1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=rf"--samples {samples}: .*x.npy has 4 sample\(s\); give 1..4"):
        load_arrays(tmp_path / "x.npy", samples=samples)


def test_a_tree_without_training_split_takes_no_statistics_from_its_test_images(tmp_path):
    _tree(tmp_path, "test", per_class=2, seed=4)
    test = load_dataset("imagefolder", "test", tmp_path)
    assert set(test.mean) == {0.0} and set(test.std) == {1.0}


def test_load_arrays_layouts_against_the_models_input_shape(tmp_path):
    """N×H×W for a one-channel model is read as N×1×H×W (and said); channels-last and other
    shapes are refused with the fix; without a known shape a 3-dim array with N labels says
    how to give N images."""
    gray = _rng(3).random((8, 28, 28), dtype=np.float32)
    np.save(tmp_path / "g.npy", gray)
    np.save(tmp_path / "y.npy", np.arange(8) % 3)
    x, y, info = load_arrays(tmp_path / "g.npy", tmp_path / "y.npy", input_shape=(1, 28, 28))
    assert x.shape == (8, 1, 28, 28) and torch.equal(x[:, 0], torch.from_numpy(gray)) and len(y) == 8
    assert "read as N×1×H×W" in info["layout"]
    one, _, info1 = load_arrays(tmp_path / "g.npy", input_shape=(8, 28, 28))  # one C×H×W sample
    assert one.shape == (1, 8, 28, 28) and "layout" not in info1
    nhwc = _rng(4).random((5, 32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "c.npy", nhwc)
    with pytest.raises(DatasetFormatError, match=r"N×H×W×C \(channels last\).*transpose\(0, 3, 1, 2\)"):
        load_arrays(tmp_path / "c.npy", input_shape=(3, 32, 32))
    np.save(tmp_path / "c1.npy", nhwc[0])
    with pytest.raises(DatasetFormatError, match=r"H×W×C image.*transpose\(2, 0, 1\)"):
        load_arrays(tmp_path / "c1.npy", input_shape=(3, 32, 32))
    with pytest.raises(DatasetFormatError, match=r"does not hold samples of the model's input shape \(3, 16, 16\)"):
        load_arrays(tmp_path / "c.npy", input_shape=(3, 16, 16))
    with pytest.raises(DatasetFormatError, match=r"8 labels for 1 input samples \(.*arr\[:, None\]"):
        load_arrays(tmp_path / "g.npy", tmp_path / "y.npy")
