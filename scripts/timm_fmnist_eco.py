"""HummingBird's eco search on timm CNNs trained here on Fashion-MNIST (issue 23's target): train
a model as timm writes it for a few epochs on a subset, compile it, search eco bits on every
comparison (ReLU6 clamps, SiLU/sigmoid breakpoints), and check that the private run with those
bits keeps every test prediction of the exact run.

    .venv/bin/python scripts/timm_fmnist_eco.py [--models mobilenetv2_100 efficientnet_b0]
        [--train 6000] [--epochs 2] [--test 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from zoo_models import timm  # noqa: E402

import ringlet  # noqa: E402
from ringlet.data import load_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mobilenetv2_100", "efficientnet_b0"])
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--test", type=int, default=64)
    args = ap.parse_args()
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    x, y = train.tensors(args.train)
    xt, yt = test.tensors(args.test)
    for name in args.models:
        torch.manual_seed(0)  # public training
        model = timm().create_model(name, num_classes=10, in_chans=1)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        t0 = time.perf_counter()
        model.train()
        for _ in range(args.epochs):
            perm = torch.randperm(x.shape[0])
            for i in range(0, x.shape[0], 64):
                idx = perm[i:i + 64]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        train_s = time.perf_counter() - t0
        pm = ringlet.compile(model, x[:256], normalization=(train.mean, train.std))
        exact = pm.plain(xt, approximate=True).argmax(1)
        cfg = pm.search(x[:512], y[:512], mode="eco", x_test=xt, y_test=yt)
        r = cfg.report
        exact_run = pm.infer(xt, batch=32, labels=yt)
        eco_run = pm.infer(xt, cfg, batch=32)
        bits = pm.bits(cfg)
        kept = {}
        for node in pm.graph.nodes:
            if node.label in bits:
                kept.setdefault(node.kind, []).append(bits[node.label][0] - bits[node.label][1])
        same = int((eco_run.logits.argmax(1) == exact_run.logits.argmax(1)).sum())
        print(f"{name}: trained {args.epochs} epochs on {args.train} images in {train_s:.0f} s; test "
              f"accuracy plain {float((exact == yt).float().mean()):.3f}, private exact "
              f"{exact_run.report['accuracy'] if 'accuracy' in exact_run.report else 'n/a'}; eco keeps "
              f"{same}/{args.test} predictions of the exact private run; bits kept by kind "
              f"{ {k: (len(v), min(v), max(v)) for k, v in kept.items()} }; comparisons/image "
              f"{r['comparisons_per_image']}; online MB/image exact "
              f"{exact_run.report['bytes_sent_per_image'] / 1e6:.2f} vs eco "
              f"{eco_run.report['bytes_sent_per_image'] / 1e6:.2f}", flush=True)


if __name__ == "__main__":
    main()
