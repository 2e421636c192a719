"""Plaintext training and evaluation: SGD with momentum, cosine schedule, standard augmentation.

One loop serves training from scratch and finetuning (approximate ReLUs, polynomial activations,
shared ReLUs): callers pass the model and, optionally, an extra loss term. Progress bars show epoch,
loss, accuracy, images/s and ETA. State is saved after every epoch so an interrupted run resumes.
Training randomness (init, shuffling, augmentation) is seeded and reproducible; it protects nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ringlet.data import Dataset

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (saved with the checkpoint)."""

    epochs: int
    batch: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    optimizer: str = "sgd"  # or "adamw" (betas 0.9, 0.999; transformers train with it)
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    augment: bool = True
    seed: int = 0
    threads: int = 0  # 0: leave torch's setting alone

    def __post_init__(self):
        if self.epochs < 0 or self.batch < 1 or self.lr <= 0:
            raise ValueError(f"invalid training config: {self}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r}: one of {', '.join(OPTIMIZERS)}")


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip (per image)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # n×h
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # n×w
    idx_n = torch.arange(n).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]  # n×h×w×c
    out = out.permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), out.flip(3), out).contiguous()


def evaluate(model: nn.Module, dataset: Dataset, samples: int | None = None, batch: int = 256,
             progress: bool = False) -> float:
    """Plaintext top-1 accuracy on the first ``samples`` images (all if None)."""
    model.eval()
    n = len(dataset) if samples is None else min(samples, len(dataset))
    correct = 0
    with torch.no_grad():
        for start in tqdm(range(0, n, batch), desc="eval", disable=not progress, leave=False):
            stop = min(start + batch, n)
            x = dataset.normalize(dataset.images[start:stop])
            correct += int((model(x).argmax(1) == dataset.labels[start:stop]).sum())
    return correct / n


def _lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _save_resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                 gen: torch.Generator, history: list) -> None:
    tensors = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum.{names[id(p)]}"] = buf.clone()
    tensors["rng"] = gen.get_state().clone()
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "state.safetensors"))
    (path / "state.json").write_text(json.dumps({"epoch": epoch, "history": history}, indent=1))


def _load_resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                 gen: torch.Generator) -> tuple[int, list]:
    tensors = load_file(str(path / "state.safetensors"))
    info = json.loads((path / "state.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    params = dict(model.named_parameters())
    for k, v in tensors.items():
        if k.startswith("momentum."):
            opt.state[params[k[9:]]]["momentum_buffer"] = v.clone()
    gen.set_state(tensors["rng"])
    return int(info["epoch"]), list(info["history"])


def fit(model: nn.Module, train: Dataset, test: Dataset | None, cfg: TrainConfig, *,
        resume_dir: str | Path | None = None,
        extra_loss: Callable[[nn.Module, int], torch.Tensor] | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        progress: bool = True, log: Callable[[str], None] | None = None) -> dict:
    """Train ``model`` in place; returns {"history": [...], "test_accuracy", "images_per_second"}.

    ``extra_loss(model, epoch)`` is added to the cross-entropy (e.g. the PILLAR penalty, which reads
    what forward hooks recorded). ``resume_dir`` keeps per-epoch state; a run restarted with the same
    directory continues after the last finished epoch.
    """
    if log is None:  # progress lines go to stderr, so that stdout stays one JSON document
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    params_decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    params_plain = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": params_decay, "weight_decay": cfg.weight_decay},
              {"params": params_plain, "weight_decay": 0.0}]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    n = len(train)
    steps_per_epoch = math.ceil(n / cfg.batch)
    total = steps_per_epoch * cfg.epochs
    start_epoch = 0
    history: list[dict[str, Any]] = []  # one record per epoch
    resume = Path(resume_dir) if resume_dir else None
    if resume and (resume / "state.json").is_file():
        start_epoch, history = _load_resume(resume, model, opt, gen)
        log(f"resuming after epoch {start_epoch} from {resume}")
    pad = 4 if train.input_shape[1] >= 32 else 2
    seen, seconds = 0, 0.0
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, unit="batch", dynamic_ncols=True)
        loss_sum, correct, count, t0 = 0.0, 0, 0, time.perf_counter()
        for i in bar:
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, step, total, steps_per_epoch)
            idx = order[i * cfg.batch:(i + 1) * cfg.batch]
            x = train.normalize(train.images[idx])
            if cfg.augment:
                x = augment_batch(x, gen, pad)
            y = train.labels[idx]
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            if extra_loss is not None:
                loss = loss + extra_loss(model, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == y).sum())
            count += len(idx)
            rate = count / (time.perf_counter() - t0)
            left = (n - count) + (cfg.epochs - epoch - 1) * n  # images still to train on, whole run
            bar.set_postfix(loss=f"{loss_sum / count:.3f}", acc=f"{correct / count:.3f}",
                            img_s=f"{rate:.0f}", run_eta=_clock(left / rate), refresh=False)
        bar.close()
        elapsed = time.perf_counter() - t0
        seen, seconds = seen + count, seconds + elapsed
        record = {"epoch": epoch + 1, "loss": loss_sum / count, "train_accuracy": correct / count,
                  "images_per_second": count / elapsed}
        if test is not None:
            record["test_accuracy"] = evaluate(model, test)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        history.append(record)
        log(json.dumps(record))
        if resume:
            _save_resume(resume, model, opt, epoch + 1, gen, history)
    model.eval()
    result = {"history": history, "config": asdict(cfg),
              "images_per_second": seen / seconds if seconds else None}
    if test is not None:
        result["test_accuracy"] = evaluate(model, test)
    return result
