"""Library entry points behind ``ringlet search`` and ``ringlet finetune`` (model specs in)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ringlet import sources
from ringlet.compiler.config import ReluConfig, as_config
from ringlet.data import Dataset
from ringlet.search import hummingbird as hb
from ringlet.search.api import _check_writable, load_groups, parse_budget, validation_split
from ringlet.train.checkpoint import save_checkpoint


def _prepare(model, weights, dataset, input_path, labels_path, test_input, test_labels, data_dir,
             normalize, image_size, test_samples, compile_args):
    """The model and the test data of search and finetune, loaded once: (pm, src, test or None).

    The data that :func:`sources.prepare` loads is the test data itself (``--test-input``, or the
    dataset's test split); with ``--input`` alone it is those inputs, and there is no test set.
    """
    use_input = test_input or input_path
    pm, src, inputs = sources.prepare(model, weights=weights, dataset=dataset, split="test",
                                      samples=test_samples if not input_path or test_input else None,
                                      input_path=use_input,
                                      labels_path=test_labels if test_input else labels_path,
                                      data_dir=data_dir, normalize=normalize, image_size=image_size,
                                      local=True, **compile_args)
    is_test = bool(test_input) or not input_path
    test = (inputs.x, inputs.y) if is_test and inputs.y is not None else None
    return pm, src, test


def _training_data(src, dataset, input_path, labels_path, data_dir, normalize, image_size,
                   train_samples=None):
    """The inputs that drive search and finetune: ``--input``/``--labels``, or the training split."""
    if input_path:
        fit_in = sources.load_inputs(src.meta, input_path=input_path, labels_path=labels_path,
                                     samples=train_samples, normalize=normalize)
        if fit_in.y is None:
            raise ValueError("--input needs --labels here (the search and finetuning need labels)")
        return Dataset.from_tensors(fit_in.x, fit_in.y, name=str(input_path))
    train, _ = sources.load_split(src.meta, dataset, "train", data_dir, normalize, image_size)
    return train


def run_search(model: str, *, mode: str, dataset: str | None = None, budget: str | None = None,
               groups: str = "stages", val_samples: int = 1024, naive: bool = False, margin: int = 0,
               parties: int = 2, min_accuracy: float | None = None, widths=hb.DEFAULT_WIDTHS,
               out: str | None = None, report_path: str | None = None, plot: str | None = None,
               progress: bool = True, data_dir=None, time_limit: float | None = None,
               test_samples: int | None = None, command: str = "", m_scan: str = "coarse",
               weights: str | None = None, input_path: str | None = None,
               labels_path: str | None = None, test_input: str | None = None,
               test_labels: str | None = None, normalize: str | None = None,
               image_size=None, frac_bits: int | None = None, smooth: str | None = None,
               input_bound: float | None = None, ring_bits: int | None = None,
               ring_margin: int | None = None, ring_frac: str = "keep") -> dict:
    """``ringlet search``: the model spec's search on its data; writes the config and the report."""
    _check_writable(out, report_path, plot)
    if mode not in ("eco", "budget", "eco-ring"):
        raise ValueError(f"--mode {mode!r}: eco, eco-ring or budget")
    if budget is not None:
        parse_budget(budget)
    groups_spec = load_groups(groups)
    compile_args = {"frac_bits": frac_bits, "ring_bits": ring_bits, "smooth": smooth,
                    "input_bound": input_bound}
    pm, src, test = _prepare(model, weights, dataset, input_path, labels_path, test_input, test_labels,
                             data_dir, normalize, image_size, test_samples, compile_args)
    train = _training_data(src, dataset, input_path, labels_path, data_dir, normalize, image_size)
    if input_path:
        vx, vy = train.tensors(min(val_samples, len(train)) if val_samples else None)
    else:
        vx, vy = validation_split(dataset or src.meta.get("dataset"), val_samples, train=train)
    cfg = pm.search(vx, vy, mode, budget, x_test=test[0] if test else None,
                    y_test=test[1] if test else None, parties=parties, progress=progress,
                    groups=groups_spec, naive=naive, margin=margin, min_accuracy=min_accuracy,
                    widths=widths, time_limit=time_limit, m_scan=m_scan,
                    **({"ring_margin": ring_margin, "ring_frac": ring_frac} if mode == "eco-ring" else {}))
    report = {"command": command, "model": model, "dataset": dataset or src.meta.get("dataset"),
              **cfg.report}
    cfg = ReluConfig(cfg.default, cfg.groups, cfg.layers, cfg.version,
                     {**cfg.extra, "search": {**cfg.extra.get("search", {}), "model": model,
                                              "dataset": report["dataset"]}})
    if out:
        cfg.save(out)
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2) + "\n")
    if plot:
        from ringlet.plots import kept_bits_plot
        kept_bits_plot(report["bits_kept_per_group"], plot, f"{model}: {mode} {budget or ''}".strip())
    return report


def run_finetune(model: str, relu_config: str, epochs: int, out: str, *, lr: float = 1e-3,
                 batch: int = 128, dataset: str | None = None, parties: int = 2, data_dir=None,
                 progress: bool = True, seed: int = 0, train_samples: int | None = None,
                 test_samples: int | None = None, command: str = "", weights: str | None = None,
                 input_path: str | None = None, labels_path: str | None = None,
                 test_input: str | None = None, test_labels: str | None = None,
                 normalize: str | None = None, image_size=None, augment: bool = True,
                 frac_bits: int | None = None, smooth: str | None = None,
                 input_bound: float | None = None, ring_bits: int | None = None) -> dict:
    """``ringlet finetune``: retrain with the config's approximate ReLUs; writes a checkpoint
    (OUT.safetensors + OUT.json) of the module, loadable as the model was."""
    if epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    config = as_config(relu_config)
    _check_writable(Path(out).with_suffix(".json"))
    compile_args = {"frac_bits": frac_bits, "ring_bits": ring_bits, "smooth": smooth,
                    "input_bound": input_bound}
    pm, src, test = _prepare(model, weights, dataset, input_path, labels_path, test_input, test_labels,
                             data_dir, normalize, image_size, test_samples, compile_args)
    if pm.module is None:
        raise ValueError(f"--model {model}: finetuning needs the module; give --model "
                         f"package.module:factory --weights {model}/module.safetensors")
    train = _training_data(src, dataset, input_path, labels_path, data_dir, normalize, image_size,
                           train_samples)
    if train_samples and not input_path:
        train = train.subset(torch.arange(min(train_samples, len(train))))
    before = pm.evaluate(*test, relu_config=config, parties=parties) if test else None
    t0 = time.time()
    pm2 = pm.finetune(train, config, epochs, lr=lr, batch=batch, parties=parties, seed=seed,
                      augment=augment, progress=progress)
    after = pm2.evaluate(*test, relu_config=config, parties=parties) if test else None
    plain = pm2.evaluate(*test) if test else None
    keep = ("model", "dataset", "input_shape", "num_classes", "normalization", "classes", "factory")
    record = {**{k: v for k, v in src.meta.items() if k in keep},
              "accuracy": after, "accuracy_exact_relu": plain, "relu_config": str(relu_config),
              "base_checkpoint": src.meta.get("checkpoint") or src.meta.get("weights"),
              "finetune_epochs": epochs, "finetune_lr": lr,
              "finetune_seconds": round(time.time() - t0, 1), "command": command}
    path = save_checkpoint(Path(out), pm2.module, record)
    return {"checkpoint": str(path), "accuracy_before": before, "accuracy_after": after,
            "accuracy_exact_relu_after": plain, "epochs": epochs,
            "seconds": round(time.time() - t0, 1)}
