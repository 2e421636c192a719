"""``ringlet bench core``: CSPRNG throughput, per-party secure conv vs plaintext, per-op costs.

Times are medians of repeated runs in this process; bytes and rounds are exact counts.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from ringlet.prng import AesCtrStream, new_seed
from ringlet.protocols import beaver, linear
from ringlet.protocols.io import share_input
from ringlet.protocols.truncation import truncate

# (in channels, out channels, output size, stride) of the 3×3 convolutions of CIFAR ResNet-18
RESNET18_CONVS = [(3, 64, 32, 1), (64, 64, 32, 1), (64, 128, 16, 2), (128, 128, 16, 1),
                  (128, 256, 8, 2), (256, 256, 8, 1), (256, 512, 4, 2), (512, 512, 4, 1)]


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


def conv_ratio(batch: int = 8, repeats: int = 3, backend: str = "int64") -> dict:
    """One party's exact conv on its 64-bit share vs a float32 conv of the same shape (summed)."""
    stream = AesCtrStream(new_seed())
    rows, secure_total, plain_total = [], 0.0, 0.0
    for cin, cout, size, stride in RESNET18_CONVS:
        hin = size * stride
        x = torch.randn(batch, cin, hin, hin)  # not secret: timing data
        w = torch.randn(cout, cin, 3, 3) * 0.05  # not secret: timing data
        share = stream.int64((batch, cin, hin, hin))
        w_int = torch.round(w * 65536).to(torch.int64)
        plain = _median_time(lambda: F.conv2d(x, w, None, stride, 1), repeats)
        secure = _median_time(lambda: linear.exact_conv2d(share, w_int, stride, 1, backend=backend),
                              repeats)
        rows.append({"shape": [batch, cin, hin, hin], "out_channels": cout, "stride": stride,
                     "plaintext_ms": plain * 1e3, "secure_ms": secure * 1e3,
                     "ratio": secure / plain})
        secure_total += secure
        plain_total += plain
    return {"conv_ratio": secure_total / plain_total, "backend": backend, "batch": batch,
            "layers": rows}


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


OPS = {
    "mul": {"x": (1 << 20,)},
    "matmul": {"x": (256, 256), "y": (256, 256)},
    "conv2d_public_weights": {"x": (8, 64, 32, 32), "w": (64, 64, 3, 3)},
    "conv2d_secret_weights": {"x": (1, 64, 16, 16), "w": (64, 64, 3, 3)},
}


def op_costs(parties: int = 2, transport: str = "local") -> dict:
    """Online time, bytes sent per party and rounds of each op (material pre-generated)."""
    from ringlet.launch import run_local
    out = {}
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
    return {"csprng_mb_s": csprng_mb_s(), **conv_ratio(batch),
            "conv_ratio_limbs": conv_ratio(batch, backend="limbs")["conv_ratio"],
            "torch_threads": torch.get_num_threads(), "parties": parties, "transport": transport,
            "ops": op_costs(parties, transport)}
