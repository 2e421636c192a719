"""Products of two secret-shared tensors with Beaver triples from the dealer (Beaver 1991).

Steps: (1) get a triple [a], [b], [c = op(a, b)] shaped like the operands; (2) open d = x − a and
e = y − b together in one round; (3) [op(x, y)] = [c] + op(d, [b]) + op([a], e) + op(d, e), the last
term added by party 0 only; (4) truncate the 2f-bit result back to f fractional bits.

Cost per party: 1 round; (p−1)·64·(|x| + |y|) bits sent (|·| = number of elements), tag ``mult``;
offline: 64 bits per output element to the last party. A square x² (:func:`square`) takes a triple
with b = a and opens d = x − a alone: (p−1)·64·|x| bits, 1 round; x² = c + 2·d·a + d².
``op`` is elementwise ``mul``, ``matmul`` or ``conv2d``; with public weights use
:mod:`ringlet.protocols.linear` instead (no communication).
"""

from __future__ import annotations

from ringlet.offline.core import beaver_op, beaver_request
from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.io import open_values
from ringlet.session import Session
from ringlet.sharing import ArithmeticShare, ShareError, check_product_frac


def _product(sess: Session, x: ArithmeticShare, y: ArithmeticShare, op: str, extra: tuple,
             tag: str, rescale: bool, among=None) -> ArithmeticShare:
    if x.party != y.party:
        raise ShareError(f"{op}: shares of different parties ({x.party}, {y.party})")
    frac = check_product_frac(op, x.frac, y.frac)
    holders = tuple(sess.world.servers) if among is None else tuple(among)
    m = sess.dealer.get(beaver_request(op, tuple(x.shape), tuple(y.shape), extra, holders))
    d, e = open_values(sess, [(tag, x.data - m.a), (tag, y.data - m.b)], "add", among=holders)
    f = beaver_op(op, extra)
    z = m.c + f(d, m.b) + f(m.a, e)
    if x.party == 0:
        z = z + f(d, e)
    out = ArithmeticShare(z, x.party, frac)
    return truncate(sess, out, y.frac) if rescale else out


def mul(sess: Session, x: ArithmeticShare, y: ArithmeticShare, rescale: bool = True,
        tag: str = "mult", among=None) -> ArithmeticShare:
    """Elementwise [x·y] (same shapes); ``among`` restricts it to a subset of servers."""
    if x.shape != y.shape:
        raise ShareError(f"mul: shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
    return _product(sess, x, y, "mul", (), tag, rescale, among)


def square(sess: Session, x: ArithmeticShare, rescale: bool = True, tag: str = "mult") -> ArithmeticShare:
    """Elementwise [x²] with a square triple (a, a²): one opening, half a product's bits."""
    frac = check_product_frac("square", x.frac, x.frac)
    holders = tuple(sess.world.servers)
    m = sess.dealer.get(beaver_request("square", tuple(x.shape), tuple(x.shape), (), holders))
    (d,) = open_values(sess, [(tag, x.data - m.a)], "add", among=holders)
    z = m.c + 2 * d * m.a
    if x.party == 0:
        z = z + d * d
    out = ArithmeticShare(z, x.party, frac)
    return truncate(sess, out, x.frac) if rescale else out


def matmul(sess: Session, x: ArithmeticShare, y: ArithmeticShare, rescale: bool = True,
           tag: str = "mult") -> ArithmeticShare:
    """[x @ y] for 2-D (or batched) shares with matching inner dimensions."""
    if x.shape[-1] != y.shape[-2 if len(y.shape) > 1 else 0]:
        raise ShareError(f"matmul: inner dimensions differ: {tuple(x.shape)} @ {tuple(y.shape)}")
    return _product(sess, x, y, "matmul", (), tag, rescale)


def conv2d(sess: Session, x: ArithmeticShare, w: ArithmeticShare, stride=1, padding=0,
           dilation=1, groups: int = 1, rescale: bool = True, tag: str = "mult") -> ArithmeticShare:
    """[conv2d(x, w)] with both the input (N×C×H×W) and the weights (O×C/g×kh×kw) secret."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    if len(x.shape) != 4 or len(w.shape) != 4 or x.shape[1] != w.shape[1] * groups:
        raise ShareError(f"conv2d: input {tuple(x.shape)} and weights {tuple(w.shape)} do not fit "
                         f"(groups={groups})")
    extra = (*pair(stride), *pair(padding), *pair(dilation), groups)
    return _product(sess, x, w, "conv2d", extra, tag, rescale)
