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
from ringlet.protocols.compare import ReluSpec, allowed_mismatch, drelu, relu, relu_cost
from ringlet.protocols.io import reveal, share_input
from ringlet.ring import FixedPoint

# accounting tags → the paper's breakdown (Figure 3): the fused select replaces B2A + Mult
BREAKDOWN = {"circuit": "circuit", "b2a": "b2a", "mult": "mult", "select": "mult",
             "reshare": "other", "trunc": "other", "open": "other"}


def default_input(n: int, scale: float = 8.0) -> np.ndarray:
    raw = AesCtrStream(b"ringlet-bench-in").int64(n)
    return (((raw >> 11) & ((1 << 53) - 1)).double() / 2.0 ** 53 * 2 - 1).numpy() * scale


def _program(sess, values: torch.Tensor, spec: ReluSpec, op: str):
    x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape), encoded=True)
    sess.barrier("setup")
    before = sess.stats.copy()
    t0 = time.perf_counter()
    if op == "relu":
        y = relu(sess, x, spec)
    else:
        y = sess.share(drelu(sess, x, spec, arithmetic=True).view(x.shape), frac=0)
    seconds = time.perf_counter() - t0
    used = sess.stats.minus(before)
    out = reveal(sess, y, to=0, decode=False)
    return {"seconds": seconds, "stats": used, "out": out}


def run_relu_bench(values: np.ndarray, spec: ReluSpec, parties: int = 2, transport: str = "local",
                   op: str = "relu", frac_bits: int = 16, threads: int = 0) -> dict:
    from ringlet.launch import run_local
    fixed = FixedPoint(frac_bits)
    x = fixed.encode(torch.from_numpy(np.asarray(values, dtype=np.float64)), what="--input")
    n = x.numel()
    program = functools.partial(_program, values=x, spec=spec, op=op)
    res = run_local(program, parties, transport=transport, pregenerate=True,
                    frac_bits=frac_bits, threads=threads)
    results = res.results
    stats = [r["stats"] for r in results]
    sent = max(s.bytes_sent() for s in stats)
    by_tag: dict[str, float] = {}
    for tag in {t for s in stats for (_, t) in s.sent}:
        bits = max(8 * s.bytes_sent(tags=(tag,)) for s in stats) / n
        key = BREAKDOWN.get(tag, "other")
        by_tag[key] = by_tag.get(key, 0.0) + bits
    out = results[0]["out"]
    want = x.clamp(min=0) if op == "relu" else (x >= 0).to(torch.int64)
    mism = out != want
    report = {
        "n": n, "parties": parties, "transport": transport, "op": op,
        "k": spec.k, "m": spec.m, "adder": spec.adder, "select": spec.select,
        "bits_sent_per_element": 8 * sent / n,
        "rounds": max(s.total_rounds() for s in stats),
        "by_tag": by_tag,
        "offline_bits_per_element": 8 * res.offline_bytes() / n,
        "seconds_online": max(r["seconds"] for r in results),
        "seconds_offline": res.seconds_offline,
        "max_abs_error": float(fixed.decode(out - want).abs().max()) if op == "relu"
        else float((out - want).abs().max()),
        "mismatches": int(mism.sum()),
        "expected_cost": relu_cost(spec, parties),
    }
    if (spec.k, spec.m) != (64, 0):
        report["unexplained_mismatches"] = int((mism & ~allowed_mismatch(x, spec.k, spec.m,
                                                                          parties)).sum())
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
