"""``--relu-protocol auto``: gmw or fss for each ReLU layer, by a cost model measured on this machine.

For a layer of n ReLUs per batch, kept bits of width w, ring ℓ, on a link of bandwidth B and
round-trip time R, each protocol's online time is modelled as

    T = n · c(protocol, w, ℓ) + n · bits / B + rounds · R

with ``bits`` and ``rounds`` the protocol's exact costs (:func:`ringlet.protocols.relu.relu_cost`;
a shared ReLU or LeakyReLU under fss uses the FSS sign and the fused select: w + ℓ + 1 bits, 2
rounds) and n · c the compute — in fact a + n·c, the line through two layer sizes (2^12 and 2^16
ReLUs with the fused truncation, two servers in one process, material pre-generated, the median of
3 runs each), measured here once and cached in ``$RINGLET_CACHE_DIR/relu-protocols.json`` by
machine. The link is the run's profile
(``--link``, else ``--auto-link``, default ``lan``). fss is chosen only where its estimate is
:data:`MARGIN` (1.2) times smaller: on ResNet-20 at 50 ms the unmodelled costs made near-even layers
slower. FSS is two-server: with more servers auto keeps gmw. Each choice is printed with both estimates.

Servers on different machines may measure differently and choose differently; the run then stops
at the first ReLU whose protocols disagree — give them the same explicit choice (or a config).
"""

from __future__ import annotations

import sys
import time

import torch

from ringlet.comm.shaper import parse_profile
from ringlet.protocols.base import spec_in_ring
from ringlet.protocols.catalog import relu_protocols
from ringlet.protocols.harness import run_threads
from ringlet.protocols.io import share_input
from ringlet.protocols.kernels.cache import MachineCache
from ringlet.protocols.relu import ReluSpec, relu, relu_cost
from ringlet.protocols.tuning.linear import BackendCache, cache_dir, machine_key
from ringlet.sharing import ArithmeticShare

CACHE_FILE = "relu-protocols.json"
MARGIN = 1.2  # fss must be estimated this much faster: near break-even the model errs towards fss
SIZES = (1 << 12, 1 << 16)  # a layer costs fixed + n · per element: measured at two sizes


def _measure(protocol: str, k: int, m: int, ring_bits: int, size: int) -> float:
    """Seconds of one fused ReLU layer of ``size`` elements (material pre-generated), median of 3."""
    spec = ReluSpec(k, m, protocol=protocol)
    values = torch.arange(size, dtype=torch.int64) * 977 - (size * 977 // 2)

    def prog(sess):
        x = share_input(sess, values if sess.rank == 0 else None, 0, (size,), encoded=True)
        x = ArithmeticShare(x.data, x.party, x.frac + sess.fixed.frac_bits)
        times = []
        for _ in range(3):
            sess.dealer.plan = []
            sess.dealer.go_online()
            sess.dealer.recording = True
            relu(sess, x, spec, shift=sess.fixed.frac_bits)
            sess.dealer.recording = False
            sess.dealer.pregenerate(list(sess.dealer.plan))
            t0 = time.perf_counter()
            relu(sess, x, spec, shift=sess.fixed.frac_bits)
            times.append(time.perf_counter() - t0)
        return sorted(times)[1]
    res = run_threads(prog, 2, ring_bits=ring_bits, timeout=300.0)
    return max(res.results)


def compute_cost(protocol: str, k: int, m: int, ring_bits: int,
                 cache: MachineCache | None = None) -> tuple[float, float, bool]:
    """(fixed seconds per layer, seconds per element, from the cache?) of ``protocol`` on [k:m]
    in Z_2^ℓ on this machine: the line through two measured layer sizes."""
    store = cache or BackendCache(cache_dir() / CACHE_FILE)
    w = k - m
    key = f"relu:{protocol}:w{w}:l{ring_bits}"
    hit = store.get(machine_key(), key)
    if hit and isinstance(hit.get("seconds_per_element"), float) and "fixed_seconds" in hit:
        return hit["fixed_seconds"], hit["seconds_per_element"], True
    (n1, n2) = SIZES
    t1, t2 = (_measure(protocol, k, m, ring_bits, n) for n in SIZES)
    per = max(0.0, (t2 - t1) / (n2 - n1))
    fixed = max(0.0, t1 - n1 * per)
    store.put(machine_key(), key, {"fixed_seconds": fixed, "seconds_per_element": per,
                                   "sizes": list(SIZES), "seconds": [t1, t2]})
    return fixed, per, False


def estimate(kind: str, n: int, k: int, m: int, ring_bits: int, protocol: str,
             bandwidth_bps: float, rtt_s: float, cache: MachineCache | None = None) -> dict:
    """The modelled online seconds of one layer (see the module docstring)."""
    spec = ReluSpec(k, m, protocol=protocol)
    cost = relu_cost(spec, 2, ring_bits)
    bits, rounds = cost["relu_bits"], cost["relu_rounds"]
    if relu_protocols()[protocol].sign is not None and kind != "relu":
        # a protocol with a sign family of its own: that sign, then the fused select
        kk, mm = spec_in_ring(spec, ring_bits) if spec.width else (k, m)
        bits, rounds = (kk - mm) + ring_bits + 1, 2
    if spec.width == 0:
        return {"seconds": 0.0, "compute": 0.0, "bits": 0, "rounds": 0, "cached": True}
    kk, mm = spec_in_ring(spec, ring_bits)
    fixed, per, cached = compute_cost(protocol, kk, mm, ring_bits, cache)
    compute = fixed + n * per
    seconds = compute + n * bits / bandwidth_bps + rounds * rtt_s
    return {"seconds": seconds, "compute": compute, "bits": bits, "rounds": rounds, "cached": cached}


def choose(model, labels: list[str], batch: int, parties: int, log=None,
           cache: MachineCache | None = None) -> dict[str, str]:
    """A registered ReLU protocol for every activation in ``labels`` of a compiled model (and print
    why): the default (the first registered, gmw) unless another is estimated :data:`MARGIN`
    times faster."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    default = relu_protocols().names()[0]
    names = [p.name for p in relu_protocols() if parties == 2 or not p.two_servers_only]
    if names == [default]:
        others = ", ".join(p for p in relu_protocols().names() if p != default)
        log(f"relu-protocol auto: {parties} servers: {default} everywhere ({others}: two servers only)")
        return {label: default for label in labels}
    link = parse_profile(model.options.auto_link or "lan")
    kinds = {n.label: n for n in model.graph.nodes if n.label in labels}
    out = {}
    for label in labels:
        node = kinds[label]
        n = batch * int(torch.tensor(node.out_shape).prod())
        k, m = model.relu_bits[label]
        ell = model.fixed.ring_bits
        est = {p: estimate(node.kind, n, k, m, ell, p, link.bandwidth_bps, link.rtt_s, cache)
               for p in names}
        pick = min(names, key=lambda p: est[p]["seconds"] * (1 if p == default else MARGIN))
        out[label] = pick
        bits = "exact" if (k, m) == (64, 0) else f"[{k}:{m}]"
        log(f"relu-protocol auto: {label} {bits} {n} per batch on {link.name}: " + "; ".join(
            f"{p} {e['seconds'] * 1e3:.1f} ms ({e['compute'] * 1e3:.1f} compute, {e['bits']} bits, "
            f"{e['rounds']} rounds)" for p, e in est.items()) + f" → {pick} (others than {default} need "
            f"{MARGIN}× less)")
    return out
