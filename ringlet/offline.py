"""The dealer (trusted third party) and its seed-compressed correlated randomness.

Every server shares a seed with the dealer. For each piece of material, every *holder* draws its
share from that seeded stream; the dealer draws the same values (it knows every seed), computes the
correlation, and sends what the material's :class:`Kind` says each holder receives: for most kinds
only the *correction* — the last holder's share of the correlated part — to the last holder; for a
function-secret-sharing key the correction words to both holders
(:mod:`ringlet.protocols.fss_material`). Offline bytes are therefore one tensor per correlation,
e.g. ℓ bits per element of a Beaver product (arithmetic corrections travel in the ring's ℓ-bit
wire format, bit planes as words), all counted under the ``offline`` tag and never as online traffic.

Requests: server 0 sends each request (a small descriptor) to the dealer; the dealer answers the
last holder. With a *plan* (the list of every request of a computation, recorded on an earlier run of
the same shapes), all material can be produced before the online phase starts (:meth:`pregenerate`).

Kinds (holders h_0 … h_{q−1}; "c" marks the corrected tensor):
  beaver   a, b, c = op(a, b) with op ∈ {mul, matmul, conv2d}                (arithmetic)
  and      a, b, c = a ∧ b on bit planes                                          (binary)
  and2     a, b1, b2, c1 = a ∧ b1, c2 = a ∧ b2 (two ANDs sharing operand a)       (binary)
  pand     2-party AND of private inputs: h_0 gets u, z0; h_1 gets v, z1 with z0 ⊕ z1 = u ∧ v
  inject   r ∈ {0,1} XOR-shared (1 plane) and arithmetic-shared, s, and r·s (arithmetic)
  b2a      r ∈ {0,1} XOR-shared and arithmetic-shared
  trunc    r (uniform in Z_2^ℓ), msb(r) and (r mod 2^(ℓ−1)) >> f, arithmetic-shared
  pim      private-input products: holder 0 gets masks α_1…α_{d−1}, holder 1 masks β_1…β_{d−1},
           both get shares of every α_a·β_b with a + b ≤ d (ESPN's cross terms)
  powers   r uniform and r^2 … r^d (ring powers), arithmetic-shared (HoneyBadger)
  injtrunc r_b ∈ {0,1} XOR- and arithmetic-shared, r uniform, msb(r), low = (r mod 2^(ℓ−1)) >> d,
           r_b·low and r_b·msb(r) (the select that also truncates by d bits)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ringlet import ring
from ringlet.comm.base import Communicator
from ringlet.prng import AesCtrStream
from ringlet.ring import Ring


class OfflineError(RuntimeError):
    """Material requested out of order, or a plan that does not match the computation."""


@dataclass(frozen=True)
class Request:
    """One piece of correlated randomness: its kind, integer parameters and holders."""

    kind: str
    params: tuple
    holders: tuple

    def encode(self) -> list[int]:
        return [_kind_ids()[self.kind], len(self.params), *self.params, len(self.holders), *self.holders]

    @staticmethod
    def decode(values: list[int], pos: int) -> tuple[Request, int]:
        kind = list(kinds())[values[pos]]
        n = values[pos + 1]
        params = tuple(values[pos + 2:pos + 2 + n])
        pos += 2 + n
        m = values[pos]
        holders = tuple(values[pos + 1:pos + 1 + m])
        return Request(kind, params, holders), pos + 1 + m


# -- how each kind is drawn ------------------------------------------------------------------------
# draw(stream, req, index, corrected) -> dict of this holder's seeded tensors
# correct(parts, req, ring) -> dict of the last holder's corrected tensors (dealer only); every
# arithmetic value is only meaningful modulo 2^ℓ, and only ``trunc``/``injtrunc`` read the ring's
# sign bit and low bits

_OPS = ("mul", "matmul", "conv2d")


def _beaver_shapes(req: Request):
    op = _OPS[req.params[0]]
    nx = req.params[1]
    xs = tuple(req.params[2:2 + nx])
    ny = req.params[2 + nx]
    ys = tuple(req.params[3 + nx:3 + nx + ny])
    extra = req.params[3 + nx + ny:]
    return op, xs, ys, extra


def beaver_op(op: str, extra: tuple):
    """The bilinear map of a Beaver triple on int64 ring tensors."""
    if op == "mul":
        return lambda a, b: a * b
    if op == "matmul":
        return torch.matmul
    stride, padding, dilation, groups = extra[0:2], extra[2:4], extra[4:6], extra[6]
    return lambda a, b: torch.nn.functional.conv2d(a, b, None, stride, padding, dilation, groups)


def _out_shape(op, xs, ys, extra):
    f = beaver_op(op, extra)
    return tuple(f(torch.zeros(xs, dtype=torch.int64), torch.zeros(ys, dtype=torch.int64)).shape)


def _draw_beaver(s: AesCtrStream, req: Request, index: int, corrected: bool) -> dict:
    op, xs, ys, extra = _beaver_shapes(req)
    out = {"a": s.int64(xs), "b": s.int64(ys)}
    if not corrected:
        out["c"] = s.int64(_out_shape(op, xs, ys, extra))
    return out


def _correct_beaver(parts: list[dict], req: Request, rng) -> dict:
    op, _, _, extra = _beaver_shapes(req)
    a = sum(p["a"] for p in parts)
    b = sum(p["b"] for p in parts)
    c = beaver_op(op, extra)(a, b)
    for p in parts[:-1]:
        c = c - p["c"]
    return {"c": c}


def _draw_and(s, req, index, corrected):
    w, nw = req.params
    out = {"a": s.words((w, nw)), "b": s.words((w, nw))}
    if not corrected:
        out["c"] = s.words((w, nw))
    return out


def _xor_all(parts, key):
    acc = parts[0][key]
    for p in parts[1:]:
        acc = acc ^ p[key]
    return acc


def _correct_and(parts, req, rng):
    c = _xor_all(parts, "a") & _xor_all(parts, "b")
    for p in parts[:-1]:
        c = c ^ p["c"]
    return {"c": c}


def _draw_and2(s, req, index, corrected):
    w, nw = req.params
    out = {"a": s.words((w, nw)), "b1": s.words((w, nw)), "b2": s.words((w, nw))}
    if not corrected:
        out["c1"], out["c2"] = s.words((w, nw)), s.words((w, nw))
    return out


def _correct_and2(parts, req, rng):
    a = _xor_all(parts, "a")
    c1, c2 = a & _xor_all(parts, "b1"), a & _xor_all(parts, "b2")
    for p in parts[:-1]:
        c1, c2 = c1 ^ p["c1"], c2 ^ p["c2"]
    return {"c1": c1, "c2": c2}


def _draw_pand(s, req, index, corrected):
    w, nw = req.params
    if index == 0:
        return {"u": s.words((w, nw)), "z": s.words((w, nw))}
    return {"v": s.words((w, nw))} if corrected else {"v": s.words((w, nw)), "z": s.words((w, nw))}


def _correct_pand(parts, req, rng):
    return {"z": (parts[0]["u"] & parts[1]["v"]) ^ parts[0]["z"]}


def _bit_values(parts, n):
    return ring.unpack_plane(_xor_all(parts, "r_bits")[0], n)


def _draw_b2a(s, req, index, corrected):
    n = req.params[0]
    out = {"r_bits": s.words((1, ring.num_words(n)))}
    if not corrected:
        out["r"] = s.int64(n)
    return out


def _correct_b2a(parts, req, rng):
    r = _bit_values(parts, req.params[0])
    for p in parts[:-1]:
        r = r - p["r"]
    return {"r": r}


def _draw_inject(s, req, index, corrected):
    out = _draw_b2a(s, req, index, corrected)
    out["s"] = s.int64(req.params[0])
    if not corrected:
        out["rs"] = s.int64(req.params[0])
    return out


def _correct_inject(parts, req, rng):
    r = _bit_values(parts, req.params[0])
    rs = r * sum(p["s"] for p in parts)
    r_last = r
    for p in parts[:-1]:
        r_last, rs = r_last - p["r"], rs - p["rs"]
    return {"r": r_last, "rs": rs}


def _draw_trunc(s, req, index, corrected):
    shape = tuple(req.params[1:])
    out = {"r": s.int64(shape)}
    if not corrected:
        out["msb"], out["low"] = s.int64(shape), s.int64(shape)
    return out


def _correct_trunc(parts, req, rng):
    f = req.params[0]
    r = sum(p["r"] for p in parts)
    msb = rng.msb(r)
    low = rng.low(r) >> f
    for p in parts[:-1]:
        msb, low = msb - p["msb"], low - p["low"]
    return {"msb": msb, "low": low}


def _draw_injtrunc(s, req, index, corrected):
    n = req.params[0]
    out = {"r_bits": s.words((1, ring.num_words(n))), "r": s.int64(n)}
    if not corrected:
        for key in ("rb", "msb", "low", "rb_low", "rb_msb"):
            out[key] = s.int64(n)
    return out


def _correct_injtrunc(parts, req, rng):
    n, d = req.params
    rb = _bit_values(parts, n)
    low = parts[0]["r"] + parts[1]["r"]  # r, then (in place: fresh memory is dear) its low bits
    for p in parts[2:]:
        low += p["r"]
    msb = torch.bitwise_right_shift(low, rng.bits - 1)
    msb &= 1
    low &= ring.mask_bits(rng.bits - 1)
    low >>= d
    out = {"rb_low": rb * low, "rb_msb": rb * msb, "rb": rb, "msb": msb, "low": low}
    for p in parts[:-1]:
        for k, v in out.items():
            v -= p[k]
    return out


def _pim_pairs(d: int):
    return [(a, j - a) for j in range(2, d + 1) for a in range(1, j)]


def _draw_pim(s, req, index, corrected):
    n, d = req.params
    out = {"mask": s.int64((d - 1, n))}
    if not corrected:
        for a, b in _pim_pairs(d):
            out[f"ab{a}_{b}"] = s.int64(n)
    return out


def _correct_pim(parts, req, rng):
    n, d = req.params
    alpha, beta = parts[0]["mask"], parts[1]["mask"]
    return {f"ab{a}_{b}": alpha[a - 1] * beta[b - 1] - parts[0][f"ab{a}_{b}"] for a, b in _pim_pairs(d)}


def _draw_powers(s, req, index, corrected):
    n, d, _frac = req.params
    out = {"r1": s.int64(n)}
    if not corrected:
        for a in range(2, d + 1):
            out[f"r{a}"] = s.int64(n)
    return out


def _correct_powers(parts, req, rng):
    n, d, _frac = req.params
    r = sum(p["r1"] for p in parts)
    out, power = {}, r
    for a in range(2, d + 1):
        power = power * r
        out[f"r{a}"] = power - sum(p[f"r{a}"] for p in parts[:-1])
    return out


@dataclass(frozen=True)
class Kind:
    """One kind of dealer material: how each holder draws its seeded part, what the dealer sends
    to whom, and how it travels.

    ``draw(stream, req, index, corrected) -> dict``: holder ``index``'s seeded tensors (the last
    holder, ``corrected``, draws none of those it receives corrected); ``correct(parts, req, ring) -> {holder index:
    {key: tensor}}``: what the dealer sends each holder; ``receives(req, index)``: the keys holder
    ``index`` receives (in the order they travel); ``raw``: keys sent as they are (bit planes,
    seeds) rather than as ring values in the ℓ-bit wire format; ``shapes(req, index)``: the shapes
    of the received keys (None: those the draw gives, uncorrected).
    """

    draw: Callable
    correct: Callable
    receives: Callable
    raw: frozenset = frozenset()
    shapes: Callable | None = None

    def received_shapes(self, req: Request, index: int) -> dict[str, tuple]:
        if self.shapes is not None:
            return self.shapes(req, index)
        drawn = self.draw(_Shapes(), req, index, False)
        return {k: tuple(drawn[k].shape) for k in self.receives(req, index)}


def _to_last(correct: Callable, keys) -> tuple[Callable, Callable]:
    """A kind that corrects the last holder only (seed compression): its correct and receives."""
    def correct_last(parts, req, rng):
        return {len(req.holders) - 1: correct(parts, req, rng)}

    def receives(req, index):
        if index != len(req.holders) - 1:
            return ()
        return tuple(sorted(keys(req) if callable(keys) else keys))
    return correct_last, receives


def _last_kind(draw, correct, keys, raw=False) -> Kind:
    correct_last, receives = _to_last(correct, keys)
    return Kind(draw, correct_last, receives,
                frozenset(keys) if raw and not callable(keys) else frozenset())


@functools.cache
def kinds() -> dict[str, Kind]:
    """Every kind of material by name; the order fixes the kinds' wire ids."""
    from ringlet.protocols import fss_material
    out = {
        "beaver": _last_kind(_draw_beaver, _correct_beaver, ("c",)),
        "and": _last_kind(_draw_and, _correct_and, ("c",), raw=True),
        "and2": _last_kind(_draw_and2, _correct_and2, ("c1", "c2"), raw=True),
        "pand": _last_kind(_draw_pand, _correct_pand, ("z",), raw=True),
        "b2a": _last_kind(_draw_b2a, _correct_b2a, ("r",)),
        "inject": _last_kind(_draw_inject, _correct_inject, ("r", "rs")),
        "trunc": _last_kind(_draw_trunc, _correct_trunc, ("low", "msb")),
        "injtrunc": _last_kind(_draw_injtrunc, _correct_injtrunc, ("low", "msb", "rb", "rb_low", "rb_msb")),
        "pim": _last_kind(_draw_pim, _correct_pim,
                          lambda req: tuple(f"ab{a}_{b}" for a, b in _pim_pairs(req.params[1]))),
        "powers": _last_kind(_draw_powers, _correct_powers,
                             lambda req: tuple(f"r{a}" for a in range(2, req.params[1] + 1))),
    }
    out.update(fss_material.kinds(Kind))
    return out


def _kind_ids() -> dict[str, int]:
    return {k: i for i, k in enumerate(kinds())}


def beaver_request(op: str, x_shape, y_shape, extra=(), holders=(0, 1)) -> Request:
    return Request("beaver", (_OPS.index(op), len(x_shape), *x_shape, len(y_shape), *y_shape,
                              *extra), tuple(holders))


# -- the dealer --------------------------------------------------------------------------------------

class Dealer:
    """The trusted third party: answers requests from server 0 until told to stop."""

    STOP = -1

    def __init__(self, comm: Communicator, streams: dict[int, AesCtrStream], requester: int = 0,
                 ring: Ring = Ring()):
        self.comm = comm
        self.streams = streams  # server rank -> stream shared with that server
        self.requester = requester
        self.ring = ring

    def produce(self, req: Request) -> list[tuple[int, dict]]:
        """Draw every holder's seeded part; [(holder rank, what the dealer sends it)] in holder
        order (only the last holder, for a seed-compressed kind)."""
        kind = kinds()[req.kind]
        last = len(req.holders) - 1
        parts = [kind.draw(self.streams[h], req, i, i == last) for i, h in enumerate(req.holders)]
        sent = kind.correct(parts, req, self.ring)
        return [(req.holders[i], sent[i]) for i in sorted(sent)]

    def serve(self) -> None:
        while True:
            (msg,) = self.comm.recv(self.requester, "offline")
            values = msg.tolist()
            if values and values[0] == self.STOP:
                return
            pos = 0
            while pos < len(values):  # each request's corrections leave as soon as they exist:
                req, pos = Request.decode(values, pos)  # the holder expands them meanwhile
                self.send_material(req)

    def send_material(self, req: Request) -> None:
        """Produce ``req``'s material and send each holder what it receives (tag ``offline``)."""
        kind = kinds()[req.kind]
        sent = self.produce(req)
        self.comm.flush()  # the previous request's material has left: free it
        for dst, corr in sent:
            keys = kind.receives(req, req.holders.index(dst))
            items = [("offline", corr[k] if k in kind.raw else self.ring.wire(corr[k]))
                     for k in keys]
            for start in range(0, len(items), 8):  # messages carry at most 8 tensors
                self.comm.send(dst, items[start:start + 8], "offline")


class OfflineClient:
    """A server's access to dealer material: online requests, or a pre-generated queue."""

    def __init__(self, comm: Communicator, party: int, stream: AesCtrStream, dealer_rank: int,
                 ring: Ring = Ring()):
        self.comm = comm
        self.party = party
        self.stream = stream
        self.dealer = dealer_rank
        self.ring = ring
        self.plan: list[Request] = []  # every request made, in order (the recorded plan)
        self.recording = False  # answer every request with zero material, asking no dealer
        self._queue: list[dict] | None = None
        self._cursor = 0

    def get(self, req: Request) -> dict:
        """This party's material for ``req`` (every server must call this in the same order)."""
        self.plan.append(req)
        if self.recording:  # a plan recording: the shapes of the material, all zeros
            if self.party not in req.holders:
                return {}
            kind, index = kinds()[req.kind], req.holders.index(self.party)
            material = kind.draw(_Shapes(), req, index, False)
            for key, shape in kind.received_shapes(req, index).items():
                material.setdefault(key, torch.zeros(shape, dtype=torch.int64))
            return material
        if self._queue is not None:
            if self._cursor >= len(self._queue):
                raise OfflineError(f"pre-generated material exhausted at request {self._cursor} "
                                   f"({req.kind}); the plan was shorter than the computation")
            expected, material = self._queue[self._cursor]
            if expected != req:
                raise OfflineError(f"request {self._cursor}: computation asks for {req}, plan has "
                                   f"{expected}")
            self._queue[self._cursor] = None
            self._cursor += 1
            return material
        if self.party == 0:
            self.comm.send(self.dealer, [("offline", torch.tensor(req.encode(), dtype=torch.int64))],
                           "offline")
        return self._expand(req, self._receive_corrections([req]))[0]

    def _receive_corrections(self, reqs: list[Request]) -> list[dict | None]:
        out = []
        pending: list = []
        for req in reqs:
            if self._receives(req):
                got, pending = self._take_corrections(req, pending)
                out.append(got)
            else:
                out.append(None)
        return out

    def _receives(self, req: Request) -> tuple:
        if self.party not in req.holders:
            return ()
        return kinds()[req.kind].receives(req, req.holders.index(self.party))

    def _take_corrections(self, req: Request, pending: list) -> tuple[dict, list]:
        """What the dealer sends this holder for ``req`` (received now if not yet in
        ``pending``), and what is left."""
        kind = kinds()[req.kind]
        keys = self._receives(req)
        while len(pending) < len(keys):
            pending.extend(self.comm.recv(self.dealer, "offline"))
        got = dict(zip(keys, pending[:len(keys)]))
        ringed = {k: v for k, v in got.items() if k not in kind.raw}
        if self.ring.bits < 64 and ringed:
            shapes = kind.received_shapes(req, req.holders.index(self.party))
            try:
                got.update({k: self.ring.unwire(v, shapes[k]) for k, v in ringed.items()})
            except ValueError as exc:
                raise OfflineError(f"party {self.party}: the dealer's {req.kind} material does not "
                                   f"fit a {self.ring.bits}-bit ring ({exc}); does the dealer run "
                                   f"with --ring-bits {self.ring.bits}?") from None
        elif self.ring.bits == 64 and any(v.dtype != torch.int64 for v in ringed.values()):
            raise OfflineError(f"party {self.party}: the dealer sends {req.kind} material of a "
                               f"narrower ring; this server computes in 64 bits (--ring-bits)")
        return got, pending[len(keys):]

    def _expand(self, reqs_or_req, corrections):
        reqs = reqs_or_req if isinstance(reqs_or_req, list) else [reqs_or_req]
        out = []
        for req, corr in zip(reqs, corrections):
            if self.party not in req.holders:
                out.append({})
                continue
            index = req.holders.index(self.party)
            material = kinds()[req.kind].draw(self.stream, req, index, index == len(req.holders) - 1)
            if corr:
                material.update(corr)
            out.append(material)
        return out

    def pregenerate(self, plan: list[Request]) -> None:
        """Fetch and expand all material of ``plan`` now; later requests must follow it exactly."""
        if self.party == 0 and plan:
            values = [v for req in plan for v in req.encode()]
            self.comm.send(self.dealer, [("offline", torch.tensor(values, dtype=torch.int64))],
                           "offline")
        self.load(self.receive(plan))

    def receive(self, plan: list[Request]) -> list:
        """The dealer's answers to ``plan``, expanded: a queue for :meth:`load`."""
        # request by request: this server draws its own seeded part while the dealer computes
        # the next correction (the dealer answers in plan order, one request at a time)
        queue, pending = [], []
        for req in plan:
            material = self._expand([req], [None])[0]
            if self._receives(req):
                corr, pending = self._take_corrections(req, pending)
                material.update(corr)
            queue.append((req, material))
        return queue

    def load(self, queue: list) -> None:
        """Answer the next requests from ``queue`` (a :meth:`receive` result), in its order."""
        self._queue = queue
        self._cursor = 0
        self.plan = []

    def go_online(self) -> None:
        """Drop any pre-generated queue: later requests go to the dealer one by one."""
        self._queue = None
        self._cursor = 0

    def stop_dealer(self) -> None:
        if self.party == 0:
            self.comm.send(self.dealer, [("offline", torch.tensor([Dealer.STOP]))], "offline")


class _Shapes:
    """A stand-in stream that draws zeros: the shapes of a kind's tensors, with no keystream."""

    def int64(self, shape) -> torch.Tensor:
        return torch.zeros(tuple(shape) if not isinstance(shape, int) else (shape,), dtype=torch.int64)

    words = int64
