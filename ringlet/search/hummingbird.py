"""HummingBird's search for the bits [k:m] each ReLU group keeps (§4.1.2 of the paper).

``eco``: per ReLU, the smallest k with m = 0 for which no validation input can overflow
(Theorem 1) — read off the recorded input ranges, plus a safety margin — then verified by the
simulator to change no ReLU output (beyond one fixed-point unit) on the validation set.

``budget``: total kept bits, weighted by each group's ReLU count, at most b × 64 × total. Depth-first
over the groups in order; for each width from ``widths``, the locally optimal m (by validation
accuracy with later groups exact: the paper's optimistic estimate). Early stops: (1) the estimate is
below ``min_accuracy``, (2) it is not above the best complete configuration so far (initially the
naive configuration's accuracy), (3) the budget is exceeded.

``naive``: the same [m + w : m] for every ReLU, m chosen by validation accuracy, for comparison.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ringlet.search.simulator import Simulator

DEFAULT_WIDTHS = (0, 1, 2, 4, 6, 8, 12, 16, 32, 64)  # the paper's {0, 1, 2, 4, …, 64}, plus 6, 12
DEFAULT_MS = tuple(range(16))
COARSE_MS = (0, 3, 6, 9, 12, 15)  # then ±1, ±2 around the best (``m_scan="coarse"``)


def relu_groups(labels: list[str], mode="stages") -> list[tuple[str, list[str]]]:
    """Groups of ReLUs: ``stages`` (stem + each ``layerN``), ``layers`` (one per ReLU) or a dict."""
    if isinstance(mode, dict):
        known = set(labels)
        for g, members in mode.items():
            bad = [m for m in members if m not in known]
            if bad:
                raise ValueError(f"group {g!r}: {bad[:3]} are not ReLUs of the model")
        covered = {m for members in mode.values() for m in members}
        rest = [lbl for lbl in labels if lbl not in covered]
        named = [(g, list(m)) for g, m in mode.items()]
        return named + [(lbl, [lbl]) for lbl in rest]
    if mode == "layers":
        return [(lbl, [lbl]) for lbl in labels]
    if mode != "stages":
        raise ValueError(f"unknown grouping {mode!r} (stages, layers, or a JSON file)")
    stage = re.compile(r"^(layer\d+)\.")
    if not any(stage.match(lbl) for lbl in labels):
        return [(lbl, [lbl]) for lbl in labels]  # no stages: one group per ReLU
    groups: dict[str, list[str]] = {}
    for lbl in labels:
        m = stage.match(lbl)
        groups.setdefault(m.group(1) if m else "stem", []).append(lbl)
    return list(groups.items())


@dataclass
class SearchStats:
    configs_evaluated: int = 0
    pruned: dict = field(default_factory=lambda: {"min_accuracy": 0, "below_best": 0, "budget": 0})
    best_trace: list = field(default_factory=list)  # (seconds, accuracy) at each improvement


def expand(groups, settings: dict) -> dict[str, tuple[int, int]]:
    """Per-ReLU bits from per-group settings (groups without a setting stay exact)."""
    out = {}
    for g, members in groups:
        if g in settings:
            for lbl in members:
                out[lbl] = settings[g]
    return out


def eco_search(sim: Simulator, margin: int = 0) -> tuple[dict, dict]:
    """Per-ReLU (k, 0) that cannot overflow on the validation inputs; returns (bits, info)."""
    ranges = sim.relu_inputs()
    carry = sim.parties - 1 if sim.fused else 0  # the rule reads bits from f upwards: a carry loss
    bits, info = {}, {}
    for label, (lo, hi) in ranges.items():
        need = 1
        while need < 64 and not (hi < 2 ** (need - 1) and lo > -(2 ** (need - 1)) + carry):
            need += 1
        k = min(64, need + margin)
        bits[label] = (k, 0)
        info[label] = {"min": lo, "max": hi, "k_needed": need, "k": k}
    return bits, info


def changed_outputs(sim: Simulator, bits: dict) -> int:
    """Number of ReLU outputs (over the validation set) that differ from exact ReLU by more than one
    fixed-point unit when every ReLU uses ``bits`` (ReLU inputs are those of the ``bits`` run)."""
    unit = 2.0 ** -sim.f
    changed = 0
    orig = sim.relu

    def spy(node, x, b, chunk=0):
        nonlocal changed
        y = orig(node, x, b, chunk)
        changed += int(((y - x.clamp(min=0)).abs() > unit).sum())
        return y
    sim.relu = spy
    try:
        sim.logits(bits)
    finally:
        sim.relu = orig
    return changed


def _best_m(sim: Simulator, groups, settings: dict, g: int, width: int, ms,
            stats: SearchStats, m_scan: str = "full") -> tuple[int, float]:
    """The m maximising validation accuracy for group g at ``width`` (later groups exact).

    ``full`` tries every m in ``ms``; ``coarse`` tries every third m, then the two neighbours on
    each side of the best (about half the evaluations).
    """
    name, members = groups[g]
    resume = sim.first_index(members)
    allowed = [0] if width in (0, 64) else [m for m in ms if m + width <= 64]
    tried: dict[int, float] = {}

    def trial(m: int) -> None:
        if m in tried or m not in allowed:
            return
        tried[m] = sim.accuracy(expand(groups, {**settings, name: (m + width, m)}), resume_at=resume)
        stats.configs_evaluated += 1

    if m_scan == "coarse" and len(allowed) > len(COARSE_MS):
        for m in (m for m in COARSE_MS if m in allowed) or allowed[:1]:
            trial(m)
        centre = max(tried, key=lambda m: (tried[m], -m))
        for m in (centre - 2, centre - 1, centre + 1, centre + 2):
            trial(m)
    else:
        for m in allowed:
            trial(m)
    best = max(tried, key=lambda m: (tried[m], -m))  # ties: the smaller m
    return best, tried[best]


def naive_search(sim: Simulator, labels: list[str], budget_bits: float, ms=DEFAULT_MS,
                 stats: SearchStats | None = None) -> tuple[dict, float]:
    """The same [m + w : m] for every ReLU with w = ⌊budget⌋; m by validation accuracy."""
    width = int(math.floor(budget_bits))
    best: tuple[float, Any] = (-1.0, None)  # (accuracy, bits); bits None until a width fits
    for m in ([0] if width in (0, 64) else [m for m in ms if m + width <= 64]):
        bits = {lbl: (m + width, m) for lbl in labels}
        acc = sim.accuracy(bits)
        if stats:
            stats.configs_evaluated += 1
        if acc > best[0]:
            best = (acc, bits)
    return best[1], best[0]


def budget_search(sim: Simulator, groups, counts: dict[str, int], budget_bits: float,
                  min_accuracy: float = 0.0, start_bound: float = 0.0, widths=DEFAULT_WIDTHS,
                  ms=DEFAULT_MS, progress: Callable[[str, float], None] | None = None,
                  time_limit: float | None = None,
                  m_scan: str = "coarse") -> tuple[dict | None, float, SearchStats]:
    """DFS over group widths under the budget; returns (per-group settings, val accuracy, stats)."""
    group_size = [sum(counts[m] for m in members) for _, members in groups]
    total = sum(group_size)
    allowed = budget_bits * total
    stats = SearchStats()
    best: dict[str, Any] = {"acc": start_bound, "settings": None}
    t0 = time.perf_counter()
    order = sorted(widths, reverse=True)

    def dfs(g: int, settings: dict, used: float) -> None:
        if time_limit and time.perf_counter() - t0 > time_limit:
            return
        if g == len(groups):
            return
        name = groups[g][0]
        for width in order:
            cost = used + width * group_size[g]
            if cost > allowed + 1e-9:
                stats.pruned["budget"] += 1          # early stop 3
                continue
            m, acc = _best_m(sim, groups, settings, g, width, ms, stats, m_scan)
            if acc < min_accuracy:
                stats.pruned["min_accuracy"] += 1    # early stop 1
                continue
            if acc <= best["acc"]:
                stats.pruned["below_best"] += 1      # early stop 2
                continue
            trial = {**settings, name: (m + width, m)}
            if g == len(groups) - 1:  # complete: the estimate is the configuration's accuracy
                best.update(acc=acc, settings=trial)
                stats.best_trace.append((time.perf_counter() - t0, acc))
                if progress:
                    progress(f"best {acc:.4f}", acc)
                continue
            dfs(g + 1, trial, cost)

    dfs(0, {}, 0.0)
    return best["settings"], best["acc"], stats
