"""How one party's local work scales from 1 to more threads, the other parties idle: the pieces a
server computes between its messages, each timed at every thread count in this one process,
interleaved round by round (medians; the same inputs at every count).

- ``conv``: ResNet-20's public-weight convolutions on a batch-32 64-bit share (the chosen exact
  backend, int64), all 19 layers;
- ``bitplanes``: one level of a carry tree on 2^20 elements' 64 bit planes (the ANDs' local part:
  XORs and ANDs of packed words, as a GMW party computes around each opening);
- ``dcf``: 2^20 exact 64-bit DCF evaluations of one key (the FSS ReLU's server work);
- ``csprng``: 64 MB of AES-CTR keystream (the dealer's and every party's expansion).
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from ringlet.prng import AesCtrStream
from ringlet.protocols.fss import dcf
from ringlet.protocols.kernels.backends import exact_conv2d
from ringlet.protocols.tuning.linear import measure_interleaved

# (in channels, out channels, size, stride) of ResNet-20's 3×3 convolutions on 32×32 inputs
RESNET20 = [(1, 16, 32, 1)] + [(16, 16, 32, 1)] * 6 + [(16, 32, 32, 2)] + [(32, 32, 16, 1)] * 5 + \
    [(32, 64, 16, 2)] + [(64, 64, 8, 1)] * 5


def _pieces(batch: int = 32) -> dict:
    stream = AesCtrStream(bytes(16))  # public timing data, not secret
    convs = []
    for cin, cout, size, stride in RESNET20:
        x = stream.int64((batch, cin, size, size))
        w = stream.below((cout, cin, 3, 3), 16) - (1 << 15)
        convs.append((x, w, stride))

    def conv():
        for x, w, stride in convs:
            exact_conv2d(x, w, stride, 1, 1, 1, "int64", ring_bits=64)
    a, b, c = (stream.int64((64, 1 << 14)) for _ in range(3))

    def bitplanes():
        g = a ^ (b & c)
        p = (a ^ b) & (c ^ g)
        return g ^ (p & (g << 1))
    n = 1 << 20
    rng = np.random.default_rng(0)  # public timing data, not secret
    alpha = torch.from_numpy(rng.integers(-(2 ** 63), 2 ** 63 - 1, n, dtype=np.int64))
    xs = torch.from_numpy(rng.integers(-(2 ** 63), 2 ** 63 - 1, n, dtype=np.int64))
    key, _ = dcf.keygen(alpha, torch.ones(n, dtype=torch.int64), 64, AesCtrStream(bytes(range(16))))

    def dcf_eval():
        dcf.evaluate(key, xs)

    prg = AesCtrStream(bytes(range(1, 17)))

    def csprng():
        prg.int64(8 << 20)
    return {"conv": conv, "bitplanes": bitplanes, "dcf": dcf_eval, "csprng": csprng}


def thread_scaling(counts=(1, 2), repeats: int = 5) -> dict:
    """Median seconds of every piece at every thread count, and each count's speed-up over 1."""
    pieces = _pieces()
    old = torch.get_num_threads()
    fns = {}
    for name, fn in pieces.items():
        for t in counts:
            def run(fn=fn, t=t):
                torch.set_num_threads(t)
                fn()
            fns[f"{name}@{t}"] = run
    try:
        runs = measure_interleaved(fns, repeats)
    finally:
        torch.set_num_threads(old)
    out: dict = {"threads": list(counts), "repeats": repeats, "pieces": {}}
    for name in pieces:
        med = {t: statistics.median(runs[f"{name}@{t}"]) for t in counts}
        out["pieces"][name] = {"seconds": {str(t): round(v, 4) for t, v in med.items()},
                               "speedup": {str(t): round(med[counts[0]] / v, 2) for t, v in med.items()}}
    return out
