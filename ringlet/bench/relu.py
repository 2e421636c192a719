"""``ringlet bench relu``: bits, rounds, time and correctness of one secure ReLU (or DReLU) layer.

Inputs are the given .npy array or a reproducible pseudo-random one (uniform on [−8, 8), AES-CTR
under a fixed public seed: the values are test data, not protective randomness). Server 0 owns the
input (server-owned inputs are shared without communication), the material is pre-generated, and
only the ReLU itself is timed and counted.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from ringlet.prng import AesCtrStream
from ringlet.protocols.base import allowed_mismatch, input_bits
from ringlet.protocols.catalog import relu_protocols, sign_families
from ringlet.protocols.io import reveal, share_input
from ringlet.protocols.relu import ReluSpec, drelu, relu, relu_cost
from ringlet.ring import FixedPoint
from ringlet.runtime.launch import run_local
from ringlet.sharing import ArithmeticShare

# accounting tags → the paper's breakdown (Figure 3): the fused select replaces B2A + Mult
_BREAKDOWN = {"circuit": "circuit", "b2a": "b2a", "mult": "mult", "select": "mult",
              "reshare": "other", "trunc": "other", "open": "other"}


def breakdown() -> dict[str, str]:
    """Accounting tag → the paper's breakdown; every registered family's tag is its circuit."""
    out = dict(_BREAKDOWN)
    for item in (*sign_families(), *relu_protocols()):
        out.setdefault(item.tag, "circuit")
    return out


def default_input(n: int, scale: float = 8.0) -> np.ndarray:
    raw = AesCtrStream(b"ringlet-bench-in").int64(n)
    return (((raw >> 11) & ((1 << 53) - 1)).double() / 2.0 ** 53 * 2 - 1).numpy() * scale


def _program(sess, values: torch.Tensor, spec: ReluSpec, op: str, shift: int = 0):
    x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape), encoded=True)
    assert x is not None  # every party here is a server
    x = ArithmeticShare(x.data, x.party, x.frac + shift)
    sess.barrier("setup")
    before = sess.stats.copy()
    t0 = time.perf_counter()
    if op == "relu":
        y = relu(sess, x, spec, shift=shift)
    else:
        y = sess.share(drelu(sess, x, spec, arithmetic=True).view(x.shape), frac=0)
    seconds = time.perf_counter() - t0
    used = sess.stats.minus(before)
    out = reveal(sess, y, to=0, decode=False)
    return {"seconds": seconds, "stats": used, "out": out}


def run_relu_bench(values: np.ndarray, spec: ReluSpec, parties: int = 2, transport: str = "local",
                   op: str = "relu", frac_bits: int = 16, threads: int = 0,
                   shift: int = 0) -> tuple[dict, torch.Tensor]:
    """One layer; ``shift`` > 0 makes the input carry that many more fractional bits (a conv's
    output) and the ReLU truncate them (fused into its select, or its one FSS round)."""
    if shift and op != "relu":
        raise ValueError("--shift applies to --op relu (a DReLU has no truncation)")
    fixed = FixedPoint(frac_bits)
    x = FixedPoint(frac_bits + shift).encode(torch.from_numpy(np.asarray(values, dtype=np.float64)),
                                             what="--input")
    n = x.numel()
    program = functools.partial(_program, values=x, spec=spec, op=op, shift=shift)
    res = run_local(program, parties, transport=transport, pregenerate=True,
                    frac_bits=frac_bits, threads=threads)
    results = res.results
    stats = [r["stats"] for r in results]
    sent = max(s.bytes_sent() for s in stats)
    by_tag: dict[str, float] = {}
    for tag in {t for s in stats for (_, t) in s.sent}:
        bits = max(8 * s.bytes_sent(tags=(tag,)) for s in stats) / n
        key = breakdown().get(tag, "other")
        by_tag[key] = by_tag.get(key, 0.0) + bits
    out = results[0]["out"]
    want = (x >> shift).clamp(min=0) if op == "relu" else (x >= 0).to(torch.int64)
    mism = (out - want).abs() > (1 if shift else 0)  # a truncation may round up by one unit
    received = [r.offline.bytes_received(tags=("offline",)) + r.online.bytes_received(tags=("offline",))
                for r in res.servers]
    report = {
        "n": n, "parties": parties, "transport": transport, "op": op, "shift": shift,
        "k": spec.k, "m": spec.m, "adder": spec.adder, "select": spec.select,
        "protocol": spec.protocol,
        "bits_sent_per_element": 8 * sent / n,
        "rounds": max(s.total_rounds() for s in stats),
        "by_tag": by_tag,
        "offline_bits_per_element": 8 * res.offline_bytes() / n,
        "offline_bytes_per_element_per_server": [b / n for b in received],
        "seconds_online": max(r["seconds"] for r in results),
        "seconds_offline": res.seconds_offline,  # pre-generation: the dealer's work + its transfer
        "max_abs_error": float(fixed.decode(out - want).abs().max()) if op == "relu"
        else float((out - want).abs().max()),
        "mismatches": int(mism.sum()),
        "expected_cost": relu_cost(spec, parties),
    }
    details = relu_protocols()[spec.protocol].details
    if details is not None:  # a keyed protocol's key bytes and AES blocks, under its name
        report[spec.protocol] = details(spec, op, shift, 64)
    if (spec.k, spec.m) != (64, 0):
        k, m = input_bits(spec, shift)
        report["unexplained_mismatches"] = int((mism & ~allowed_mismatch(x, k, m, parties)).sum())
    return report, out


def parse_bits(text: str) -> tuple[int, int]:
    if text == "exact":
        return 64, 0
    try:
        k, m = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--bits {text!r}: expected K:M (e.g. 12:4) or 'exact'") from None
    ReluSpec(k, m)  # validates the range
    return k, m
