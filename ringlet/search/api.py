"""``search_bits``: HummingBird's search on a compiled graph and the images that drive it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ringlet.compiler.config import ReluConfig, setting_of
from ringlet.compiler.model import CompiledModel
from ringlet.data import load_dataset
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
    if (tx is None) != (ty is None):
        raise ValueError("test images and labels go together: give both tx and ty, or neither")
    b = parse_budget(budget) if budget is not None else None  # given with --mode budget only (checked)
    labels = graph.relu_names
    if not labels:
        raise ValueError("the model has no comparison (ReLU, clamp, max-pool, smooth activation) to "
                         "search bits for")
    t_start = time.perf_counter()
    cm = CompiledModel(graph, fixed=FixedPoint(frac_bits))
    sim = Simulator(cm, vx, vy, parties=parties)
    test_sim = (Simulator(cm, tx, ty, parties=parties, cache_shares=False, batch=1000)
                if tx is not None and ty is not None else None)
    test_acc = (lambda bits: test_sim.accuracy(bits)) if test_sim else (lambda bits: None)  # noqa: E731
    counts = graph.relu_elements()
    group_list = hb.relu_groups(labels, groups if isinstance(groups, dict) else load_groups(groups))
    report = {**(report or {}), "mode": mode, "parties": parties, "val_samples": int(vx.shape[0]),
              "test_samples": int(tx.shape[0]) if tx is not None else 0,
              "relus_per_image": graph.relus_per_image(),
              "comparisons_per_image": graph.comparisons_per_image(),
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
            assert b is not None  # --mode budget
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
