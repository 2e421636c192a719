"""Dealer material of the function-secret-sharing gates (:mod:`ringlet.protocols.fss.gates`).

Both servers receive the DCF correction words (common to both keys); each draws its own root seeds
and its additive shares of the mask from the stream it shares with the dealer, so roots never
travel; the last holder (server 1) also receives the corrections of the mask's derived values.

Kinds (holders (0, 1); ℓ the ring's width; w = k − m the compared bits, w ≥ 1):

``fsssign`` (n, w) — the sign of a w-bit sum opened with a w-bit mask ρ (DReLU on the servers'
    own bits [k:m]): holders draw ρ_b ∈ Z_2^w; DCF on w − 1 bits with α = ρ mod 2^(w−1) and
    payload β = 1 − 2·msb_w(ρ); server 1 gets [msb ρ] (arithmetic) and its XOR bit plane.
``fssrelu`` (n, k, m, s) — ReLU on bits [k:m] of x̂ = x + r, truncating s bits: holders draw
    r_b ∈ Z_2^ℓ; with b = (−r)[k:m] and q = −b mod 2^w: α = q mod 2^(w−1), β = 1 − 2·msb_w(q),
    payloads (β, β·T) for s = 0 (T = r) or (β, β·T, β·M) with T = r >> s (unsigned) and
    M = msb_ℓ(r); server 1 gets [Mq] = [msb_w q], [Mq·T] and, for s > 0, [T], [M], [Mq·M].

Bytes per element sent to each server: DCF words (w − 1)·16 + w·P·ℓ/8 + 2(w − 1)/8; server 1
also ℓ/8 per additive value (1 + 1/64·8 for fsssign's bit plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ringlet import ring
from ringlet.offline.kind import Kind
from ringlet.offline.request import Material, Params
from ringlet.protocols.fss import dcf

Tensor = torch.Tensor


@dataclass(frozen=True)
class FssSign(Params):
    """The sign of ``n`` w-bit sums."""

    KIND = "fsssign"
    n: int
    w: int


@dataclass(frozen=True)
class FssRelu(Params):
    """ReLU of ``n`` elements on bits [k:m], truncating ``shift`` bits."""

    KIND = "fssrelu"
    n: int
    k: int
    m: int
    shift: int


@dataclass(frozen=True)
class DcfKey(Material):
    """A server's DCF key: its roots and the correction words (None when w < 2)."""

    roots: Tensor
    cw_last: Tensor | None = None
    cw_seed: Tensor | None = None
    cw_t: Tensor | None = None
    cw_v: Tensor | None = None


@dataclass(frozen=True)
class SignKey(DcfKey):
    """``rho`` this server's mask share; server 1 also [msb ρ] and its bit plane."""

    rho: Tensor | None = None
    mq: Tensor | None = None
    mq_bits: Tensor | None = None


@dataclass(frozen=True)
class ReluKey(DcfKey):
    """``r`` this server's mask share; server 1 also the derived values (T, M for a shift)."""

    r: Tensor | None = None
    mq: Tensor | None = None
    mqT: Tensor | None = None  # noqa: N815 - the paper's names
    M: Tensor | None = None  # noqa: N815
    T: Tensor | None = None  # noqa: N815
    mqM: Tensor | None = None  # noqa: N815

CW_KEYS = ("cw_last", "cw_seed", "cw_t", "cw_v")
_RAW = frozenset({"cw_seed", "cw_t", "mq_bits"})


def relu_payloads(shift: int) -> int:
    return 2 if shift == 0 else 3


def relu_additive(shift: int) -> tuple[str, ...]:
    return ("mq", "mqT") if shift == 0 else ("M", "T", "mq", "mqM", "mqT")


def _cw_shapes(n: int, w: int, p: int) -> dict:
    if w < 2:
        return {}
    levels = w - 1
    return {"cw_last": (p, n), "cw_seed": (levels, n, 2), "cw_t": (levels, 2, (n + 7) // 8),
            "cw_v": (levels, p, n)}


def _draw_sign(s, req, index, corrected):
    n, w = req.params.n, req.params.w
    out = {"rho": s.int64(n) & ring.mask_bits(w), "roots": s.int64((n, 2))}
    if not corrected:
        out["mq"], out["mq_bits"] = s.int64(n), s.words((1, ring.num_words(n)))
    return out


def _draw_relu(s, req, index, corrected):
    n, shift = req.params.n, req.params.shift
    out = {"r": s.int64(n), "roots": s.int64((n, 2))}
    if not corrected:
        for key in relu_additive(shift):
            out[key] = s.int64(n)
    return out


def _keys_to_wire(k0: dcf.KeyBatch) -> dict:
    """The correction words as they travel (and as :class:`~ringlet.protocols.fss.dcf.KeyBatch`
    keeps them): no conversion on either side."""
    return {"cw_seed": torch.from_numpy(k0.cw_seed.view(np.int64)), "cw_t": torch.from_numpy(k0.cw_t),
            "cw_v": torch.from_numpy(k0.cw_v), "cw_last": torch.from_numpy(k0.cw_last)}


def key_from(material: DcfKey, party: int, w: int) -> dcf.KeyBatch:
    """This server's DCF key from its material (w ≥ 2: below, no comparison is needed)."""
    m = material
    if w < 2 or m.cw_seed is None or m.cw_t is None or m.cw_v is None or m.cw_last is None:
        raise ValueError(f"a DCF key needs w ≥ 2 compared bits and its correction words (w = {w})")
    roots = m.roots.numpy().view(np.uint64)
    roots[:, 0] &= ~np.uint64(1)  # in place: the drawn roots belong to this material alone
    return dcf.KeyBatch(party, w - 1, roots, m.cw_seed.numpy().view(np.uint64), m.cw_t.numpy(),
                        m.cw_v.numpy(), m.cw_last.numpy())


def _roots(parts) -> tuple:
    return tuple(p["roots"].numpy().view(np.uint64) for p in parts)


def _correct_sign(parts, req, rng):
    w = req.params.w
    rho = (parts[0]["rho"] + parts[1]["rho"]) & ring.mask_bits(w)
    mq = ring.msb(rho, w)
    sent = {}
    if w >= 2:
        k0, _ = dcf.keygen(rho & ring.mask_bits(w - 1), 1 - 2 * mq, w - 1, roots=_roots(parts))
        sent = _keys_to_wire(k0)
    last = dict(sent)
    last["mq"] = mq - parts[0]["mq"]
    last["mq_bits"] = ring.pack_plane(mq).view(1, -1) ^ parts[0]["mq_bits"]
    return {0: sent, 1: last}


def _correct_relu(parts, req, rng):
    k, m, shift = req.params.k, req.params.m, req.params.shift
    w = k - m
    r = rng.unsigned(parts[0]["r"] + parts[1]["r"])
    b = ring.extract_bits(rng.unsigned(-r), k, m)
    q = (-b) & ring.mask_bits(w)
    mq = ring.msb(q, w)
    beta = 1 - 2 * mq
    t = (r >> shift) & ring.mask_bits(rng.bits - shift) if shift else parts[0]["r"] + parts[1]["r"]
    values = {"mq": mq, "mqT": mq * t}
    pay = [beta, beta * t]
    if shift:
        big_m = rng.msb(r)
        values.update({"T": t, "M": big_m, "mqM": mq * big_m})
        pay.append(beta * big_m)
    sent = {}
    if w >= 2:
        k0, _ = dcf.keygen(q & ring.mask_bits(w - 1), torch.stack(pay, 1), w - 1,
                           roots=_roots(parts))
        sent = _keys_to_wire(k0)
    last = dict(sent)  # for s = 0, T = r: its shares are the r_b the holders drew
    for key in relu_additive(shift):
        last[key] = values[key] - parts[0][key]
    return {0: sent, 1: last}


def _receives_sign(req, index):
    keys = CW_KEYS if req.params.w >= 2 else ()
    return keys + (("mq", "mq_bits") if index == 1 else ())


def _receives_relu(req, index):
    k, m, shift = req.params.k, req.params.m, req.params.shift
    keys = CW_KEYS if k - m >= 2 else ()
    return keys + (tuple(sorted(relu_additive(shift))) if index == 1 else ())


def _shapes_sign(req, index):
    n, w = req.params.n, req.params.w
    out = _cw_shapes(n, w, 1)
    if index == 1:
        out.update({"mq": (n,), "mq_bits": (1, ring.num_words(n))})
    return out


def _shapes_relu(req, index):
    n, k, m, shift = req.params.n, req.params.k, req.params.m, req.params.shift
    out = _cw_shapes(n, k - m, relu_payloads(shift))
    if index == 1:
        out.update({key: (n,) for key in relu_additive(shift)})
    return out


def kinds() -> dict[str, Kind]:
    """The FSS kinds of material by name."""
    return {
        "fsssign": Kind(FssSign, SignKey, _draw_sign, _correct_sign, _receives_sign, _RAW, _shapes_sign),
        "fssrelu": Kind(FssRelu, ReluKey, _draw_relu, _correct_relu, _receives_relu, _RAW, _shapes_relu),
    }


def key_bytes(n: int, w: int, payloads: int, ring_bits: int, additive: int) -> dict:
    """Bytes per server of n elements' material: {0: server 0's, 1: server 1's}."""
    cw = 0
    if w >= 2:
        levels = w - 1
        cw = (16 * levels * n + ((levels + 1) * n * payloads * ring_bits + 7) // 8
              + 2 * levels * ((n + 7) // 8))
    return {0: cw, 1: cw + additive}
