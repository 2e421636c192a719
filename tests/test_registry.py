"""Every registered protocol, one test body each property: instantiated from the registries.

The matrix is protocol × servers × ring × transport, formed from :mod:`ringlet.protocols.catalog`
(a protocol that needs two servers gets no three-server case). ``make test`` runs a fast subset;
``pytest -m full`` the whole product. Completeness: every registered protocol and sign family
has cost cases here or in ``test_relu.py``, every node kind an oracle case in
``test_operators.py`` (or its own module), every tag and material kind a family declares exists,
and ``import ringlet`` starts nothing.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run

from ringlet import ring
from ringlet.protocols.base import allowed_mismatch, input_bits
from ringlet.protocols.catalog import material_kinds, relu_protocols, sign_families
from ringlet.protocols.io import reveal, share_input
from ringlet.protocols.relu import ReluSpec, drelu, relu, relu_cost

COUNTED = ("input", "output", "offline", "setup")
N = 256


def _matrix(full: bool):
    rings = (32, 40, 64) if full else (40, 64)
    transports = ("local", "tcp", "tls", "gloo") if full else ("local",)
    out = []
    for proto in relu_protocols():
        for parties in (2, 3):
            if proto.two_servers_only and parties != 2:
                continue
            for ell in rings:
                for transport in transports:
                    out.append((proto.name, parties, ell, transport))
    return out  # the fast subset: every protocol, server count and ring, on local links only


def _cases(full: bool):
    fast = set(_matrix(False))
    return [pytest.param(*case, marks=[pytest.mark.full] if full else [], id="-".join(map(str, case)))
            for case in _matrix(full) if not full or case not in fast]


def _values(ell: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)  # not secret: test data
    top = 2 ** (ell - 3)  # the compiler keeps |x| < 2^(ℓ−2); fss's fused offset needs it
    v = torch.from_numpy(rng.integers(-top, top, N, dtype=np.int64))
    edges = [0, 1, -1, 2, -2, top - 1, -top, 2 ** 16, -(2 ** 16), 2 ** 10 - 1, -(2 ** 10)]
    v[:len(edges)] = torch.tensor(edges)
    v[len(edges):len(edges) + 100] = torch.from_numpy(rng.integers(-300, 300, 100))
    return v


def _program(sess, values, spec, op):
    x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape), encoded=True)
    before = sess.stats.copy()
    y = relu(sess, x, spec) if op == "relu" else drelu(sess, x, spec, arithmetic=False)
    used = sess.stats.minus(before)
    out = reveal(sess, y, decode=False) if op == "relu" else y
    return out, 8 * used.bytes_sent(exclude=COUNTED), used.total_rounds(exclude=COUNTED)


def _specs(protocol: str, ell: int):
    return [ReluSpec(64, 0, protocol=protocol), ReluSpec(min(ell, 20), 6, protocol=protocol)]


@pytest.mark.parametrize("protocol,parties,ell,transport", _cases(False) + _cases(True))
def test_a_registered_relu_protocol_is_right_and_costs_its_formula(protocol, parties, ell, transport):
    v = _values(ell, seed=ell + parties)
    for spec in _specs(protocol, ell):
        for op in ("relu", "drelu"):
            res = run(functools.partial(_program, values=v, spec=spec, op=op), parties,
                      transport=transport, ring_bits=ell).results
            k, m = input_bits(spec, 0, ell)
            allowed = allowed_mismatch(v, k, m, parties)
            if op == "relu":
                mism = res[0][0] != v.clamp(min=0)
            else:  # XOR shares of the DReLU plane; its decision at x = 0 may also flip for m > 0
                plane = functools.reduce(torch.bitwise_xor, (r[0] for r in res))
                mism = ring.unpack_plane(plane[0], N) != (v >= 0).to(torch.int64)
                allowed = allowed | ((v == 0) & (m > 0))
            assert not (mism & ~allowed).any(), (spec, op)
            if (k, m) == (ell, 0):
                assert not mism.any(), (spec, op)  # exact is exact
            cost = relu_cost(spec, parties, ell)
            assert max(r[1] for r in res) == cost[f"{op}_bits"] * N, (spec, op)
            assert max(r[2] for r in res) == cost[f"{op}_rounds"], (spec, op)


def test_the_matrix_covers_every_registered_protocol_and_family():
    assert {c[0] for c in _matrix(False)} == set(relu_protocols().names())
    import test_relu  # the sign families' circuit costs are asserted there, family by family
    assert "fams.names()" in open(test_relu.__file__).read()
    for family in sign_families():
        w = 8
        assert family.circuit_cost(w)[1] >= 1 and family.requests(w, 1) is not None


def test_every_tag_and_material_kind_a_family_declares_exists():
    from ringlet.comm.base import TAGS
    kinds = material_kinds()
    for item in (*sign_families(), *relu_protocols()):
        assert item.tag in TAGS, item.name
        assert all(kind in kinds for kind in item.kinds), item.name


def test_every_node_kind_has_an_oracle_case():
    import test_operators

    from ringlet.compiler.ops import registry
    # smooth and smoothpoly: test_smooth_activations_within_their_stated_error (every method)
    covered = {"input", "output", "smooth", "smoothpoly"} | {"grelu", "poly"}  # test_grelu.py, test_poly.py
    for case in test_operators.CASES.values():
        covered |= set(case[1])
    assert set(registry().ops) <= covered, sorted(set(registry().ops) - covered)


def test_import_ringlet_starts_nothing():
    code = "import ringlet, sys, threading; print('torch' in sys.modules, threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "1"], out.stdout + out.stderr
