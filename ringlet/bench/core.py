"""``ringlet bench core``: CSPRNG throughput, per-party secure conv vs plaintext, per-op costs.

Times are medians of repeated runs in this process, the plaintext baseline and every backend
interleaved round by round (each row's ``spread``: (max − min)/median of its runs); bytes and rounds
are exact counts. The conv
ratios cover every public-weight layer of CIFAR ResNet-18 (3×3 convs, 1×1 stride-2 shortcuts, the
final linear) for each exact backend and the auto choice, at ring widths 64 and 32.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ringlet.prng import AesCtrStream, new_seed
from ringlet.protocols.arith import beaver, linear
from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.io import share_input
from ringlet.protocols.kernels.backends import limb_plan
from ringlet.protocols.tuning.linear import CHOICES, choose_backend, measure_interleaved
from ringlet.runtime.launch import run_local

# (in channels, out channels, output size, stride) of the 3×3 convolutions of CIFAR ResNet-18
RESNET18_CONVS = [(3, 64, 32, 1), (64, 64, 32, 1), (64, 128, 16, 2), (128, 128, 16, 1),
                  (128, 256, 8, 2), (256, 256, 8, 1), (256, 512, 4, 2), (512, 512, 4, 1)]
# (in channels, out channels, output size) of its 1×1 stride-2 shortcut convolutions
RESNET18_SHORTCUTS = [(64, 128, 16), (128, 256, 8), (256, 512, 4)]
RESNET18_LINEAR = (512, 10)  # the final classifier
RINGS = (64, 32)  # ring widths the conv ratios are measured at (one limb suffices at 32)


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def csprng_mb_s(megabytes: int = 64, repeats: int = 5) -> float:
    stream = AesCtrStream(new_seed())
    n = megabytes * (1 << 20) // 8
    return megabytes * (1 << 20) / 1e6 / _median_time(lambda: stream.int64(n), repeats)


def resnet18_layers(batch: int) -> list[dict]:
    """The public-weight layers of CIFAR ResNet-18 (3×3 convs, 1×1 shortcuts, the classifier)."""
    rows = [{"kind": "conv", "shape": [batch, cin, size * stride, size * stride], "out_channels": cout,
             "kernel": 3, "stride": stride, "padding": 1} for cin, cout, size, stride in RESNET18_CONVS]
    rows += [{"kind": "conv", "shape": [batch, cin, 2 * size, 2 * size], "out_channels": cout,
              "kernel": 1, "stride": 2, "padding": 0} for cin, cout, size in RESNET18_SHORTCUTS]
    cin, cout = RESNET18_LINEAR
    return rows + [{"kind": "linear", "shape": [batch, cin], "out_channels": cout}]


def _layer_timing(layer: dict, backends, rings, repeats: int, stream) -> dict:
    """float32 plaintext vs each exact backend (and the auto choice) on one 64-bit share."""
    shape, cout = layer["shape"], layer["out_channels"]
    x = torch.randn(*shape)  # not secret: timing data
    share = stream.int64(tuple(shape))
    if layer["kind"] == "conv":
        k, st, pad = layer["kernel"], layer["stride"], layer["padding"]
        w = torch.randn(cout, shape[1], k, k) * 0.05  # not secret: timing data
        w_int = torch.round(w * 65536).to(torch.int64)

        def plain():
            return F.conv2d(x, w, None, st, pad)

        def secure(be, ring):
            return linear.exact_conv2d(share, w_int, st, pad, backend=be, ring_bits=ring)
        auto_args = {"kind": "conv", "x_shape": shape, "w": w_int, "stride": st, "padding": pad}
    else:
        w = torch.randn(cout, shape[1]) * 0.05  # not secret: timing data
        w_int = torch.round(w * 65536).to(torch.int64)

        def plain():
            return F.linear(x, w)

        def secure(be, ring):
            return linear.exact_linear(share, w_int, be, ring_bits=ring)
        auto_args = {"kind": "linear", "x_shape": shape, "w": w_int}
    fns: dict[str, Callable[[], Any]] = {"plaintext": plain}
    for ring in rings:
        for be in backends:
            if be != "auto" and not (be == "int64" and ring != 64 and 64 in rings):
                fns[f"{be}@{ring}"] = functools.partial(secure, be, ring)
    runs = measure_interleaved(fns, repeats)  # one warm-up each, then rounds: a slow spell hits all
    med = {k: statistics.median(v) * 1e3 for k, v in runs.items()}
    row = {**layer, "plaintext_ms": med["plaintext"],
           "spread": {k: round((max(v) - min(v)) / statistics.median(v), 3) for k, v in runs.items()}}
    for ring in rings:
        sfx = "" if ring == 64 else f"_ring{ring}"
        ms = {be: med[f"{be}@{ring}"] if f"{be}@{ring}" in med else med.get(f"{be}@64")
              for be in backends if be != "auto"}
        if "auto" in backends:
            chosen = choose_backend(**auto_args, ring_bits=ring)
            ms["auto"] = ms.get(chosen) or _median_time(
                lambda be=chosen, ring=ring: secure(be, ring), repeats) * 1e3
            row["auto" + sfx] = chosen
        row["limbs" + sfx] = limb_plan(w_int, ring)[0]
        row["ms" + sfx] = ms
    return row


def _key(backend: str, ring: int) -> str:
    name = "conv_ratio" + ("" if backend == "int64" else "_" + backend.replace("-", "_"))
    return name + ("" if ring == 64 else f"_ring{ring}")


def conv_ratios(batch: int = 8, repeats: int = 3, backends=None, rings=RINGS) -> dict:
    """One party's exact public-weight layers of ResNet-18 on its share vs float32 plaintext of
    the same shapes (totals over the layers), for every backend and the auto choice, per ring width.

    Keys: conv_ratio (int64), conv_ratio_limbs, conv_ratio_limbs_cl, conv_ratio_limbs_unfold,
    conv_ratio_auto, and the same with a _ring32 suffix; ``layers``: per layer its times (ms, per
    backend), limb count and chosen backend; plus the old per-layer secure_ms/ratio (int64, ℓ = 64).
    """
    backends = tuple(backends or CHOICES)
    stream = AesCtrStream(new_seed())
    rows = [_layer_timing(layer, backends, rings, repeats, stream) for layer in resnet18_layers(batch)]
    plain_total = sum(r["plaintext_ms"] for r in rows)
    out = {"batch": batch, "backend": "int64" if "int64" in backends else backends[0],
           "plaintext_ms_total": plain_total}
    for ring in rings:
        ms_key = "ms" if ring == 64 else f"ms_ring{ring}"
        for be in backends:
            out[_key(be, ring)] = sum(r[ms_key][be] for r in rows) / plain_total
    for r in rows:
        main = r["ms"].get(out["backend"])
        r.update(secure_ms=main, ratio=main / r["plaintext_ms"])
    out["layers"] = rows
    return out


def conv_ratio(batch: int = 8, repeats: int = 3, backend: str = "int64", ring_bits: int = 64) -> dict:
    """:func:`conv_ratios` for one backend (or ``auto``) at one ring width: conv_ratio, layers."""
    res = conv_ratios(batch, repeats, (backend,), (ring_bits,))
    return {"conv_ratio": res[_key(backend, ring_bits)], "backend": backend, "ring_bits": ring_bits,
            "batch": batch, "layers": res["layers"]}


def _op_program(op: str, shapes: dict):
    def program(sess):
        enc = lambda shape, owner: share_input(  # noqa: E731
            sess, torch.zeros(shape) if sess.rank == owner else None, owner, shape)
        if op == "mul":
            x, y = enc(shapes["x"], 0), enc(shapes["x"], 1)
            return beaver.mul(sess, x, y).shape
        if op == "matmul":
            x, y = enc(shapes["x"], 0), enc(shapes["y"], 1)
            return beaver.matmul(sess, x, y).shape
        if op == "conv2d_secret_weights":
            x, w = enc(shapes["x"], 0), enc(shapes["w"], 1)
            return beaver.conv2d(sess, x, w, padding=1).shape
        x = enc(shapes["x"], 0)
        w = torch.zeros(shapes["w"], dtype=torch.int64)
        y = linear.conv2d_public(x, w, None, padding=1)
        return truncate(sess, y, 16).shape
    return program


OPS: dict[str, dict[str, tuple[int, ...]]] = {
    "mul": {"x": (1 << 20,)},
    "matmul": {"x": (256, 256), "y": (256, 256)},
    "conv2d_public_weights": {"x": (8, 64, 32, 32), "w": (64, 64, 3, 3)},
    "conv2d_secret_weights": {"x": (1, 64, 16, 16), "w": (64, 64, 3, 3)},
}


def op_costs(parties: int = 2, transport: str = "local") -> dict:
    """Online time, bytes sent per party and rounds of each op (material pre-generated)."""
    out: dict[str, Any] = {}
    for op, shapes in OPS.items():
        # the input sharing happens inside the program; only the op's own tags are counted below
        res = run_local(_op_program(op, shapes), parties, transport=transport, pregenerate=True)
        rep = res.servers
        tags = ("mult", "trunc")
        out[op] = {"shapes": {k: list(v) for k, v in shapes.items()},
                   "bytes_sent_per_party": max(r.online.bytes_sent(tags=tags) for r in rep),
                   "rounds": max(r.online.total_rounds(tags=tags) for r in rep),
                   "seconds_online": res.seconds_online,
                   "offline_bytes": res.offline_bytes()}
    return out


def bench_core(parties: int = 2, transport: str = "local", batch: int = 8) -> dict:
    return {"csprng_mb_s": csprng_mb_s(), **conv_ratios(batch),
            "torch_threads": torch.get_num_threads(), "parties": parties, "transport": transport,
            "ops": op_costs(parties, transport)}
