"""``search_bits``: HummingBird's search on a compiled graph and the images that drive it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ringlet.data import load_dataset
from ringlet.nn.config import ReluConfig, setting_of
from ringlet.nn.secure import CompiledModel
from ringlet.ring import FixedPoint
from ringlet.search import hummingbird as hb
from ringlet.search.simulator import Simulator


def validation_split(dataset: str, samples: int, data_dir=None, seed: int = 0, train=None):
    """``samples`` images of the *training* split (a seeded, not secret, permutation)."""
    train = train if train is not None else load_dataset(dataset, "train", data_dir)
    if not 1 <= samples <= len(train):
        raise ValueError(f"--val-samples {samples}: the training split has {len(train)} images")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:samples]
    return train.tensors() if samples == len(train) else train.subset(order).tensors()


def parse_budget(text: str) -> float:
    """'8/64' → 8.0 kept bits per ReLU (of 64)."""
    try:
        num, den = text.split("/") if "/" in text else (text, "64")
        value = float(num) * 64 / float(den)
    except ValueError:
        raise ValueError(f"--budget {text!r}: expected B/64 (e.g. 8/64)") from None
    if not 0 <= value <= 64:
        raise ValueError(f"--budget {text!r}: must be between 0/64 and 64/64")
    return value


def load_groups(spec: str):
    if spec in ("stages", "layers"):
        return spec
    path = Path(spec)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--groups {spec}: neither 'stages', 'layers' nor a readable JSON file "
                         f"({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--groups {spec}: expected an object of group name → list of ReLU names")
    return data


class _Progress:
    """Counts evaluations on a tqdm bar showing the best accuracy so far."""

    def __init__(self, sim: Simulator, enabled: bool, desc: str):
        self.bar = tqdm(desc=desc, unit="config", disable=not enabled, dynamic_ncols=True,
                        mininterval=0.1 if sys.stderr.isatty() else 15)
        self.best = 0.0
        self._orig = sim.accuracy
        sim.accuracy = self

    def __call__(self, bits, resume_at=None):
        acc = self._orig(bits, resume_at)
        self.bar.update(1)
        return acc

    def improved(self, message: str, acc: float) -> None:
        self.best = acc
        self.bar.set_postfix(best=f"{acc:.4f}")

    def close(self):
        self.bar.close()


def search_bits(graph, vx: torch.Tensor, vy: torch.Tensor, tx: torch.Tensor | None = None,
                ty: torch.Tensor | None = None, *, mode: str, budget: str | None = None,
                groups="stages", naive: bool = False, margin: int = 0, parties: int = 2,
                min_accuracy: float | None = None, widths=hb.DEFAULT_WIDTHS, progress: bool = True,
                time_limit: float | None = None, m_scan: str = "coarse", frac_bits: int = 16,
                report: dict | None = None) -> tuple[ReluConfig, dict]:
    """HummingBird's search on a compiled graph: validation images ``vx, vy`` drive it, test
    images ``tx, ty`` (optional) measure the result. Returns the configuration and the report."""
    if mode not in ("eco", "budget"):
        raise ValueError(f"--mode {mode!r}: eco or budget")
    if mode == "budget" and budget is None:
        raise ValueError("--mode budget needs --budget (e.g. 8/64)")
    if mode == "eco" and budget is not None:
        raise ValueError("--budget applies to --mode budget only")
    b = parse_budget(budget) if mode == "budget" else None
    labels = graph.relu_names
    if not labels:
        raise ValueError("the model has no ReLU to search bits for")
    t_start = time.perf_counter()
    cm = CompiledModel(graph, fixed=FixedPoint(frac_bits))
    sim = Simulator(cm, vx, vy, parties=parties)
    test_sim = Simulator(cm, tx, ty, parties=parties, cache_shares=False, batch=1000) if tx is not None else None
    test_acc = (lambda bits: test_sim.accuracy(bits)) if test_sim else (lambda bits: None)  # noqa: E731
    counts = graph.relu_elements()
    group_list = hb.relu_groups(labels, groups if isinstance(groups, dict) else load_groups(groups))
    report = {**(report or {}), "mode": mode, "parties": parties, "val_samples": int(vx.shape[0]),
              "test_samples": int(tx.shape[0]) if tx is not None else 0,
              "relus_per_image": sum(counts[n] for n in labels),
              "groups": {g: m for g, m in group_list}, "exact_accuracy": test_acc({}),
              "exact_val_accuracy": sim.accuracy({})}
    bar = _Progress(sim, progress, f"search {mode}")
    stats = hb.SearchStats()
    try:
        if mode == "eco":
            bits, info = hb.eco_search(sim, margin)
            stats.configs_evaluated = 2
            report.update(margin_bits=margin, eco_ranges=info,
                          eco_changed_outputs=hb.changed_outputs(sim, bits),
                          eco_val_accuracy=sim.accuracy(bits))
            per_group = {g: [bits[m] for m in members] for g, members in group_list}
            report["eco_accuracy"] = test_acc(bits)
        else:
            naive_bits, naive_val = hb.naive_search(sim, labels, b, stats=stats)
            bound = naive_val if min_accuracy is None else max(naive_val, 0.0)
            settings, val_acc, dfs_stats = hb.budget_search(
                sim, group_list, counts, b, min_accuracy=min_accuracy or 0.0, start_bound=bound,
                widths=widths, progress=bar.improved, time_limit=time_limit, m_scan=m_scan)
            stats.configs_evaluated += dfs_stats.configs_evaluated
            stats.pruned = dfs_stats.pruned
            if settings is None:  # nothing beat the naive configuration: keep it
                bits, val_acc, found = naive_bits, naive_val, False
            else:
                bits, found = hb.expand(group_list, settings), True
            per_group = {g: [bits.get(m, (64, 0)) for m in members] for g, members in group_list}
            report.update(budget=budget, budget_bits=b, m_scan=m_scan, widths=list(widths), budget_val_accuracy=val_acc,
                          naive_val_accuracy=naive_val, dfs_found_better_than_naive=found,
                          best_trace=dfs_stats.best_trace,
                          budget_accuracy=test_acc(bits))
            if naive:
                report["naive_accuracy"] = test_acc(naive_bits)
                report["naive_bits"] = list(next(iter(naive_bits.values())))
    finally:
        bar.close()
    total = sum(counts[n] for n in labels)
    kept = sum(counts[lbl] * (k - m) for lbl, (k, m) in bits.items())
    report.update({
        "bits_kept_per_group": {g: [list(s) for s in v] for g, v in per_group.items()},
        "kept_bits_per_relu": kept / total,
        "kept_fraction": kept / (64 * total),
        "search_seconds": time.perf_counter() - t_start,
        "configs_evaluated": stats.configs_evaluated,
        "simulator_forwards": sim.evaluations,
        "pruned": stats.pruned,
    })
    return _config(group_list, bits, report), report


def _config(group_list, bits: dict, report: dict) -> ReluConfig:
    layers = {}
    groups = {}
    for g, members in group_list:
        settings = {bits.get(m, (64, 0)) for m in members}
        if len(settings) == 1 and len(members) > 1:
            groups[g] = members
            layers[g] = setting_of(*settings.pop())
        else:
            for m in members:
                layers[m] = setting_of(*bits.get(m, (64, 0)))
    provenance = {k: report[k] for k in ("model", "dataset", "mode", "val_samples") if k in report}
    if "budget" in report:
        provenance["budget"] = report["budget"]
    return ReluConfig(default="exact", groups=groups, layers=layers, extra={"search": provenance})


def _check_writable(*paths) -> None:
    """Fail before the work, not after it, when an output cannot be written."""
    for p in paths:
        if p is None:
            continue
        parent = Path(p).resolve().parent
        if not parent.is_dir():
            raise FileNotFoundError(f"cannot write {p}: the folder {parent} does not exist")
        if Path(p).is_dir():
            raise IsADirectoryError(f"cannot write {p}: it is a directory")


def _prepare(model, weights, dataset, input_path, labels_path, test_input, test_labels, data_dir,
             normalize, image_size, test_samples, compile_args):
    """The model and the test data of search and finetune, loaded once: (pm, src, test or None).

    The data that :func:`sources.prepare` loads is the test data itself (``--test-input``, or the
    dataset's test split); with ``--input`` alone it is those inputs, and there is no test set.
    """
    from ringlet import sources
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
    from ringlet import sources
    from ringlet.data import Dataset
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
    from ringlet.private import as_config
    from ringlet.train.checkpoint import save_checkpoint
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
