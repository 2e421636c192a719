"""A user's own model end to end: a torchvision-style ResNet-18 on an ImageFolder of PNGs.

The same work through the public API (no internal import) and through the CLI with
``--model userzoo:resnet18_cifar --weights W``: train a few steps, eval, eco search, budget search,
finetune, private inference over TCP (secure logits within 1e-3 of plaintext, same argmax).
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from userzoo import resnet18_cifar

import ringlet

CLASSES = ("circle", "stripes", "top")


def _image(cls: int, rng) -> np.ndarray:
    """32×32 RGB test images whose class is visible: a bright disc, vertical stripes or a top band."""
    yy, xx = np.mgrid[:32, :32]
    if cls == 0:
        mask = (yy - 16) ** 2 + (xx - 16) ** 2 < 60
    elif cls == 1:
        mask = (xx // 4) % 2 == 0
    else:
        mask = yy < 12
    img = rng.integers(0, 80, (32, 32, 3))
    img[mask] += 150
    return img.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)  # test data only
    for split, n in (("train", 48), ("test", 12)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(_image(c, rng)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """``ringlet train`` on the user's factory: a checkpoint that names its factory."""
    from ringlet.cli.main import main
    out = tmp_path_factory.mktemp("trained")
    assert main(["train", "--model", "userzoo:resnet18_cifar", "--dataset", "imagefolder", "--data-dir",
                 str(folder), "--epochs", "3", "--lr", "0.05", "--batch", "16", "--out", str(out),
                 "--name", "mine", "--no-progress", "--json", "--seed", "1"]) == 0
    meta = json.loads((out / "mine.json").read_text())
    assert meta["factory"] == "userzoo:resnet18_cifar" and meta["classes"] == list(CLASSES)
    return out / "mine.safetensors"


def _load_split(root, split, mean=None, std=None):
    """The user's own loader (PIL + numpy), as any PyTorch user writes one."""
    xs, ys = [], []
    for c, name in enumerate(CLASSES):
        for path in sorted((root / split / name).iterdir()):
            xs.append(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
            ys.append(c)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2)
    if mean is None:
        mean, std = x.mean((0, 2, 3)), x.std((0, 2, 3))
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), torch.tensor(ys), mean, std


def test_the_api_runs_a_users_module_from_compile_to_tcp(folder, trained):
    from safetensors.torch import load_file
    x_train, y_train, mean, std = _load_split(folder, "train")
    x_test, y_test, _, _ = _load_split(folder, "test", mean, std)
    net = resnet18_cifar()
    net.load_state_dict(load_file(str(trained)))
    net.eval()
    pm = ringlet.compile(net, x_train[:64], normalization=(mean.tolist(), std.tolist()),
                         classes=CLASSES)
    assert pm.input_range.method == "pixels"
    assert torch.allclose(pm.plain(x_test), net(x_test).double(), atol=1e-4)
    plain_acc = pm.evaluate(x_test, y_test)
    assert plain_acc > 0.6  # it learned the shapes
    eco = pm.search(x_train[:64], y_train[:64], mode="eco")
    assert eco.report["eco_changed_outputs"] == 0 and set(eco.layers) | {
        m for g in eco.groups.values() for m in g} >= {"layer1.0.relu", "layer1.0.relu#1"}
    assert pm.evaluate(x_test, y_test, relu_config=eco) == plain_acc
    budget = pm.search(x_train[:64], y_train[:64], mode="budget", budget="8/64",
                       widths=(0, 4, 8, 16, 64), time_limit=8)
    assert budget.report["kept_bits_per_relu"] <= 8 + 1e-9
    pm2 = pm.finetune((x_train, y_train), relu_config=budget, epochs=1, batch=32)
    assert pm2.module is not pm.module and pm.fingerprint() != pm2.fingerprint()
    res = pm2.infer(x_test[:4], relu_config=eco, parties=2, transport="tcp", batch=4)
    plain = pm2.plain(x_test[:4])
    assert float((res.logits - plain).abs().max()) < 1e-3
    assert torch.equal(res.logits.argmax(1), plain.argmax(1))
    assert res.report["argmax_agreement"] == 1.0 and res.report["rounds"] > 0


def _cli(capsys, *argv):
    from ringlet.cli.main import main
    code = main(list(argv) + ["--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_the_cli_takes_a_factory_and_its_weights(folder, trained, tmp_path, capsys):
    model = ["--model", "userzoo:resnet18_cifar", "--weights", str(trained)]
    data = ["--dataset", "imagefolder", "--data-dir", str(folder)]
    ev = _cli(capsys, "eval", *model, *data)
    assert ev["samples"] == 36 and ev["normalization"]["source"] == "model"
    eco_path = tmp_path / "eco.json"
    eco = _cli(capsys, "search", *model, *data, "--mode", "eco", "--val-samples", "64",
               "--out", str(eco_path), "--no-progress")
    assert eco["eco_changed_outputs"] == 0 and eco_path.is_file()
    budget = _cli(capsys, "search", *model, *data, "--mode", "budget", "--budget", "8/64",
                  "--widths", "0,4,8,16,64", "--time-limit", "8", "--val-samples", "64",
                  "--out", str(tmp_path / "b.json"), "--no-progress")
    assert budget["kept_bits_per_relu"] <= 8 + 1e-9
    ft = _cli(capsys, "finetune", *model, *data, "--relu-config", str(tmp_path / "b.json"),
              "--epochs", "1", "--batch", "32", "--out", str(tmp_path / "ft"), "--no-progress")
    assert ft["checkpoint"].endswith("ft.safetensors")
    rep = _cli(capsys, "infer", "--model", "userzoo:resnet18_cifar", "--weights",
               str(tmp_path / "ft.safetensors"), *data, "--relu-config", str(eco_path),
               "--samples", "4", "--batch", "4", "--transport", "tcp", "--no-progress", "--no-results")
    assert rep["argmax_agreement"] == 1.0 and rep["max_abs_logit_error"] < 1e-3
    assert rep["input_range"]["method"] == "pixels" and rep["input_range"]["min_predicted_bits"] > 4


def test_a_saved_private_model_folder_is_a_model_for_every_command(folder, trained, tmp_path, capsys):
    from safetensors.torch import load_file

    from ringlet.cli.main import main
    x_train, y_train, mean, std = _load_split(folder, "train")
    x_test, y_test, _, _ = _load_split(folder, "test", mean, std)
    net = resnet18_cifar()
    net.load_state_dict(load_file(str(trained)))
    pm = ringlet.compile(net.eval(), x_train[:32], normalization=(mean.tolist(), std.tolist()))
    saved = pm.save(tmp_path / "pm")
    x_path, y_path = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x_path, x_test.numpy())
    np.save(y_path, y_test.numpy())
    ev = _cli(capsys, "eval", "--model", str(saved), "--input", str(x_path), "--labels", str(y_path))
    assert ev["accuracy"] == pm.evaluate(x_test, y_test)
    rep = _cli(capsys, "infer", "--model", str(saved), "--input", str(x_path), "--samples", "2",
               "--no-progress", "--no-results")
    assert rep["fingerprint"] == pm.fingerprint() and rep["argmax_agreement"] == 1.0
    (tmp_path / "c.json").write_text('{"version": 1}')
    assert main(["finetune", "--model", str(saved), "--input", str(x_path), "--labels", str(y_path),
                 "--relu-config", str(tmp_path / "c.json"), "--epochs", "1", "--out",
                 str(tmp_path / "ft")]) == 1
    assert "finetuning needs the module" in capsys.readouterr().err
    loaded = ringlet.load(saved)
    with pytest.raises(ValueError, match="finetuning needs the model's module"):
        loaded.finetune((x_train, y_train), None, epochs=1)
    again = ringlet.load(saved, module=resnet18_cifar())
    assert torch.equal(again.plain(x_test), pm.plain(x_test)) and again.module is not None
