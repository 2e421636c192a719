"""The share-level simulator of the offline phase (HummingBird §4.1.1).

Every layer runs as plain PyTorch (float32) on the compiled, BatchNorm-folded graph; at each ReLU
with kept bits [k:m] the simulator builds real random 64-bit shares of the fixed-point input and
applies exactly the online rule: t_i = s_i[k':m'], sign = msb of (Σ t_i mod 2^(k'−m')), output =
x·(1 − sign). As online, the input carries the scale the secure run gives it (2f bits after a conv,
with bits [k+f : m+f] read, see :func:`ringlet.protocols.relu.input_bits`), or f bits in the
baseline that truncates first. Width 0 is the identity; exact ReLUs are plain ReLUs.

These shares protect nothing, so they come from a seeded torch generator (reproducible; one fixed
share tensor per ReLU node, so every configuration is compared on the same randomness). Activations
of an unchanged prefix are cached: trying a setting for a later group re-runs only from there.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from ringlet import ring
from ringlet.compiler.interpret import PlainInterpreter
from ringlet.compiler.model import CompiledModel
from ringlet.protocols.base import input_bits
from ringlet.protocols.relu import ReluSpec

EXACT = (64, 0)


def decide(shares: list[torch.Tensor], k: int, m: int) -> torch.Tensor:
    """The online DReLU rule on given shares: 1 where the kept bits say x ≥ 0, else 0."""
    w = k - m
    if w == 0:
        return torch.ones_like(shares[0])
    total = None
    for s in shares:
        t = ring.extract_bits(s, k, m)
        total = t if total is None else total + t
    assert total is not None  # at least one share
    return 1 - ring.msb(total & ring.mask_bits(w), w)


def keep_from_lows(x: torch.Tensor, lows: list[torch.Tensor], scale: int, k: int,
                   m: int) -> torch.Tensor:
    """DReLU (as x's dtype) by the rule on [k:m] with p parties, given the low bits of p−1 shares.

    With x_r = round(x·2^scale), Σ_i s_i[k:m] ≡ ⌊x_r/2^m⌋ − c (mod 2^(k−m)), where the carry loss
    c = (Σ_{i<p−1} a_i + ((x_r − Σ a_i) mod 2^m) − (x_r mod 2^m)) / 2^m and a_i = s_i mod 2^m: the same
    decision as :func:`decide` on the full shares (needs m ≤ 31 when ``lows`` hold 31 bits).
    """
    rx = torch.round(x.double() * (2.0 ** scale)).to(torch.int64)
    mask = (1 << m) - 1
    lo = rx & mask
    total = torch.zeros_like(lo)
    for a in lows:
        total = total + (a.to(torch.int64) & mask)
    carry = (total + ((lo - total) & mask) - lo) >> m
    q = (rx >> m) - carry
    return (1 - ((q >> (k - m - 1)) & 1)).to(x.dtype)


_COMPILED: dict = {}


def fused_keep(x, lows, scale, k, m):
    """:func:`keep_from_lows` compiled into one kernel by torch.compile when possible (about 20×
    faster on CPU); plain PyTorch otherwise or with RINGLET_NO_COMPILE=1."""
    import os
    fn = _COMPILED.get(len(lows))
    if fn is None:
        fn = keep_from_lows
        if not os.environ.get("RINGLET_NO_COMPILE"):
            try:
                fn = torch.compile(keep_from_lows, dynamic=True)
                fn(x[:64], [v[:64] for v in lows], scale, k, m)  # compile now, fail here if at all
            except Exception:  # noqa: BLE001 - no compiler on this machine: stay eager
                fn = keep_from_lows
        _COMPILED[len(lows)] = fn
    return fn(x, lows, scale, k, m)


def _last_share(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    last = x
    for s in masks:
        last = last - s
    return last


class Simulator(PlainInterpreter):
    """Plaintext forward with share-level ReLUs over a fixed set of images."""

    mode = "simulate"

    def __init__(self, model: CompiledModel, images: torch.Tensor, labels: torch.Tensor,
                 parties: int = 2, fused: bool = True, seed: int = 0, cache_size: int = 8,
                 batch: int = 1024, cache_shares: bool = True):
        super().__init__(model.graph, torch.float32)
        self.model = model
        self.images = images.float()
        self.labels = labels
        self.parties = parties
        self.fused = fused
        self.seed = seed
        self.batch = batch
        self.cache_shares = cache_shares
        self.f = model.fixed.frac_bits
        self._shares: dict[tuple, list[torch.Tensor]] = {}
        self._cache: OrderedDict = OrderedDict()
        self.cache_size = cache_size
        self.evaluations = 0
        self._bits: dict = {}
        self._chunk = 0

    # -- the ReLU rule ----------------------------------------------------------------------------
    def _shift(self, node) -> int:
        in_frac = self.model.fracs[node.inputs[0]]
        return in_frac - self.f if self.fused else 0

    def _generator(self, key: tuple) -> torch.Generator:
        digest = hashlib.sha256(repr(key).encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:7], "little") ^ self.seed)

    def _full_shares(self, key: tuple, like: torch.Tensor) -> list[torch.Tensor]:
        """p−1 random 64-bit shares for one ReLU node (and chunk of images); not cached."""
        gen = self._generator(key)
        return [torch.randint(-(2 ** 63), 2 ** 63 - 1, like.shape, generator=gen, dtype=torch.int64)
                for _ in range(self.parties - 1)]

    def _random_lows(self, key: tuple, like: torch.Tensor) -> list[torch.Tensor]:
        """The low 31 bits of the same shares as :meth:`_full_shares` (int32), cached per node."""
        cached = self._shares.get(key)
        if cached is None or cached[0].shape != like.shape:
            cached = [(s & 0x7FFFFFFF).to(torch.int32) for s in self._full_shares(key, like)]
            if self.cache_shares:
                self._shares[key] = cached
        return cached

    def relu(self, node, x: torch.Tensor, bits: tuple[int, int], chunk: int = 0) -> torch.Tensor:
        """The simulated ReLU of node ``node`` on float input x (one chunk of the images)."""
        if bits == EXACT:
            return x.clamp(min=0)
        return x * self.keep(node, x, bits, chunk)

    def keep(self, node, x: torch.Tensor, bits: tuple[int, int], chunk: int = 0) -> torch.Tensor:
        """The simulated sign decision (1 where kept, as x's dtype) of node ``node`` on x.

        The rule runs on real random shares: p−1 random 64-bit shares and x minus their sum. When
        m ≤ 31 only the shares' low 31 bits matter (:func:`keep_from_lows`) and only those are kept
        (int32); otherwise the full shares are drawn and :func:`decide` is applied. Every decision
        of one node (a clamp's two bounds, a smooth function's breakpoints: x minus a public
        constant) reads the same shares, as the servers' do.
        """
        if bits == EXACT:
            return (x >= 0).to(x.dtype)
        if bits[0] == bits[1]:
            return torch.ones_like(x)
        shift = self._shift(node)
        scale = self.f + shift
        k, m = input_bits(ReluSpec(*bits), shift)
        if m <= 31:
            return fused_keep(x, self._random_lows((node.name, chunk), x), scale, k, m)
        shares = self._full_shares((node.name, chunk), x)
        return self._decide_dense(x.reshape(-1), shares, scale, k, m).view(x.shape)

    @staticmethod
    def _decide_dense(x: torch.Tensor, shares, scale: int, k: int, m: int,
                      chunk: int = 1 << 16) -> torch.Tensor:
        """The rule on the full shares of every element, in cache-sized chunks (about twice as fast
        as one pass)."""
        keep = torch.empty(x.shape, dtype=x.dtype)
        for i in range(0, x.numel(), chunk):
            ring_x = torch.round(x[i:i + chunk].double() * (1 << scale)).to(torch.int64)
            masks = [s.reshape(-1)[i:i + chunk] for s in shares]
            keep[i:i + chunk] = decide(masks + [_last_share(ring_x, masks)], k, m).to(x.dtype)
        return keep

    # -- forward with prefix caching ---------------------------------------------------------------
    def simulated_relu(self, node, x: torch.Tensor) -> torch.Tensor:
        """ReLU of ``node`` under the bits of the forward in progress (the op handlers call this)."""
        return self.relu(node, x, self._bits.get(node.label, EXACT), self._chunk)

    def simulated_keep(self, node, x: torch.Tensor) -> torch.Tensor:
        """The sign decisions of ``node`` on x under the bits of the forward in progress."""
        return self.keep(node, x, self._bits.get(node.label, EXACT), self._chunk)

    def _prefix_key(self, bits: dict, upto: int) -> tuple:
        return tuple(bits.get(n.label, EXACT) for n in self.graph.nodes[:upto]
                     if self.ops[n.kind].bits == "relu")

    def logits(self, bits: dict, resume_at: int | None = None) -> torch.Tensor:
        """Outputs for all images under ``bits``; ``resume_at`` (a node index) caches the live
        activations there for this prefix configuration and starts from them when already cached."""
        self.evaluations += 1
        outs = []
        with torch.no_grad():
            for chunk, start in enumerate(range(0, self.images.shape[0], self.batch)):
                outs.append(self._forward(self.images[start:start + self.batch], bits, chunk, resume_at))
        return torch.cat(outs)

    def _forward(self, x, bits, chunk, resume_at) -> torch.Tensor:
        self._bits, self._chunk = bits, chunk
        if resume_at is None:
            return self.run(x)
        key = (chunk, resume_at, self._prefix_key(bits, resume_at))
        env = self._cache.get(key)
        if env is None:
            env = self.run(x, stop=resume_at)
            self._cache[key] = env
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return self.run(None, start=resume_at, env=env)

    def accuracy(self, bits: dict, resume_at: int | None = None) -> float:
        pred = self.logits(bits, resume_at).argmax(1)
        return float((pred == self.labels).double().mean())

    def relu_inputs(self) -> dict[str, tuple[float, float]]:
        """(min, max) of every ReLU's input over the images, with exact ReLUs, in ring units at
        the scale the ReLU's rule reads (after the shift)."""
        ranges: dict[str, tuple[float, float]] = {}
        orig, orig_keep = self.relu, self.keep

        def record(node, x):
            scaled = torch.floor(x.double() * (1 << self.f))  # ⌊x·2^f⌋: the rule's x in ring units
            lo, hi = float(scaled.min()), float(scaled.max())
            old = ranges.get(node.label, (lo, hi))
            ranges[node.label] = (min(lo, old[0]), max(hi, old[1]))

        def spy(node, x, bits, chunk=0):
            record(node, x)
            return orig(node, x, bits, chunk)

        def spy_keep(node, x, bits, chunk=0):  # decisions taken without a ReLU (breakpoints)
            record(node, x)
            return orig_keep(node, x, bits, chunk)
        self.relu, self.keep = spy, spy_keep  # type: ignore[method-assign]
        try:
            self.logits({})
        finally:
            self.relu, self.keep = orig, orig_keep  # type: ignore[method-assign]
        return ranges

    def first_index(self, labels) -> int:
        """Index of the first node of the graph that is one of the ReLUs ``labels``."""
        labels = set(labels)
        return min(i for i, n in enumerate(self.graph.nodes) if n.label in labels)
