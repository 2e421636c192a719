"""Which exact backend computes a public-weight layer fastest here: measured once, cached on disk.

Every backend of :mod:`ringlet.protocols.kernels.backends` gives the same result modulo 2^ℓ, so the
choice is a per-machine performance hint and can never change a result. :func:`choose_backend`
times the candidates on random int64 data of exactly the layer's shape, interleaved (one warm-up
each, then rounds in which every remaining candidate runs once, in an order that rotates, so a
slow spell of the machine hits all of them alike; a candidate is dropped once its fastest run is
more than 3× the best median so far) and keeps the one of the lowest median. A cached choice is
measured again when a run observes the layer taking more than ``DRIFT``× its recorded time
(:func:`check_drift`).

The cache is one JSON file, ``$RINGLET_CACHE_DIR/linear-backends.json`` (default directory
``~/.cache/ringlet``), keyed by the machine (CPU model, torch version, torch threads) and the
layer (kind, input shape, weight shape, stride, padding, dilation, groups, number of limbs). It is
written atomically (a temporary file, then ``os.replace``); an unreadable or corrupt file is
ignored with a warning and rewritten by the next choice, never an error.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from ringlet.protocols.kernels.backends import (
    BACKENDS,
    exact_conv2d,
    exact_linear,
    limb_plan,
)
from ringlet.protocols.kernels.cache import MachineCache, cache_dir, machine_key
from ringlet.sharing import ShareError

CACHE_FILE = "linear-backends.json"
REPEATS = 3
SLOWER = 3.0  # a candidate whose fastest run is this many times the best median is dropped
DRIFT = 2.0   # a layer observed this many times slower than its recorded time is measured again
DRIFT_FLOOR_MS = 1.0  # below this, observed times are noise
CHOICES = BACKENDS + ("auto",)  # what SecureOptions.backend and --linear-backend accept


def shape_key(kind: str, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1,
              limbs: int = 1) -> str:
    def norm(v):
        return list(v) if isinstance(v, (tuple, list)) else [v, v]
    if kind == "linear":
        return f"linear x={list(x_shape)} w={list(w_shape)} limbs={limbs}"
    return (f"conv x={list(x_shape)} w={list(w_shape)} stride={norm(stride)} "
            f"padding={norm(padding)} dilation={norm(dilation)} groups={groups} limbs={limbs}")


def BackendCache(path=None) -> MachineCache:  # noqa: N802 - the cache of this module's choices
    """The cache of measured linear-backend choices (``path``: another file)."""
    return MachineCache(path if path is not None else cache_dir() / CACHE_FILE, "linear-backend")


def measure_interleaved(fns: dict, repeats: int = REPEATS, slower: float = math.inf) -> dict[str, list[float]]:
    """Seconds of each candidate's runs: one warm-up each, then ``repeats`` rounds in which every
    remaining candidate runs once (the order rotating by one each round); a candidate whose
    fastest run exceeds ``slower`` × the best median so far stops early (its runs are kept)."""
    names = list(fns)
    for name in names:
        fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    alive = list(names)
    for r in range(repeats):
        order = alive[r % len(alive):] + alive[:r % len(alive)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
        best = min(statistics.median(times[n]) for n in alive)
        alive = [n for n in alive if min(times[n]) <= slower * best]
    return times


def candidates(kind: str, groups: int = 1, limbs_ok: bool = True) -> tuple[str, ...]:
    """The backends worth timing, the likely fastest first (so slow ones stop early)."""
    if not limbs_ok:
        return ("int64",)
    if kind == "linear":
        return ("limbs", "int64")  # every limbs* variant is the same matmul
    return ("limbs", "limbs-cl") + (("limbs-unfold",) if groups == 1 else ()) + ("int64",)


def _limbs(w: torch.Tensor, ring_bits: int) -> int:
    """Limbs the weights split into at this ring width (0: too large for any limbs backend)."""
    try:
        return limb_plan(w, ring_bits)[0]
    except ShareError:
        return 0


def choose_backend(kind: str, x_shape, w: torch.Tensor, stride=1, padding=0, dilation=1,
                   groups: int = 1, ring_bits: int = 64, cache: MachineCache | bool = True,
                   record: dict | None = None) -> str:
    """The fastest exact backend for one layer (``kind`` conv or linear) on this machine.

    ``cache``: True (the default file), False (measure, store nothing) or a :class:`BackendCache`.
    ``record``, if given, receives the measured milliseconds and whether the cache answered.
    """
    if kind not in ("conv", "linear"):
        raise ValueError(f"choose_backend: kind must be conv or linear, got {kind!r}")
    limbs = _limbs(w, ring_bits)
    cands = candidates(kind, groups, limbs > 0)
    if len(cands) == 1:
        return cands[0]
    store = BackendCache() if cache is True else cache or None
    machine = machine_key()
    key = shape_key(kind, x_shape, w.shape, stride, padding, dilation, groups, limbs)
    hit = store.get(machine, key) if store is not None else None
    if hit is not None and hit.get("backend") in cands:
        if record is not None:
            record.update(cached=True, ms=hit.get("ms"))
        return hit["backend"]
    gen = torch.Generator().manual_seed(0)  # not secret: timing data; torch's global RNG untouched
    x = torch.randint(-2 ** 63, 2 ** 63 - 1, tuple(x_shape), dtype=torch.int64,  # not secret: timing
                          generator=gen)
    if kind == "conv":
        def run(be):
            return exact_conv2d(x, w, stride, padding, dilation, groups, be, ring_bits=ring_bits)
    else:
        def run(be):
            return exact_linear(x, w, be, ring_bits=ring_bits)
    runs = measure_interleaved({be: (lambda be=be: run(be)) for be in cands}, REPEATS, SLOWER)
    times = {be: statistics.median(t) for be, t in runs.items()}
    choice = min(times, key=lambda be: times[be])
    ms = {be: round(t * 1e3, 3) for be, t in times.items()}
    if store is not None:
        store.put(machine, key, {"backend": choice, "ms": ms, "ring_bits": ring_bits})
    if record is not None:
        record.update(cached=False, ms=ms)
    return choice


def check_drift(kind: str, x_shape, w: torch.Tensor, backend: str, observed_ms: float, stride=1,
                padding=0, dilation=1, groups: int = 1, ring_bits: int = 64,
                cache: MachineCache | None = None) -> bool:
    """Forget the cached choice of this layer when a run observed ``backend`` taking more than
    DRIFT × its recorded time (and over DRIFT_FLOOR_MS): the next :func:`choose_backend`
    measures the candidates again. Returns whether it forgot."""
    store = cache if cache is not None else BackendCache()
    machine = machine_key()
    key = shape_key(kind, x_shape, w.shape, stride, padding, dilation, groups, _limbs(w, ring_bits))
    hit = store.get(machine, key)
    if hit is None or hit.get("backend") != backend:
        return False
    recorded = (hit.get("ms") or {}).get(backend)
    if recorded is None or observed_ms < DRIFT_FLOOR_MS or observed_ms <= DRIFT * recorded:
        return False
    store.put(machine, key, {**hit, "backend": None, "drifted_ms": round(observed_ms, 3)})
    return True


__all__ = ["CHOICES", "BackendCache", "cache_dir", "candidates", "choose_backend", "machine_key",
           "measure_interleaved", "check_drift", "shape_key"]
