"""Softmax on shares: error on a dense grid and on edge rows, a public mask, exact bits and
rounds, reduced-ring comparisons, and the servers never see the input or the output."""

from __future__ import annotations

import pytest
import torch
from conftest import record_received, run

from ringlet.protocols.io import reveal, share_input
from ringlet.protocols.relu import ReluSpec
from ringlet.protocols.softmax import prepare_mask, softmax, softmax_cost


def _rows(d=65):
    gen = torch.Generator().manual_seed(0)  # test data only
    x = torch.randn(64, d, generator=gen) * 4
    x[0] = 0.0                                   # all equal
    x[1] = -30.0
    x[1, 3] = 5.0                                # one dominant element, the rest far below the clip
    x[2] = torch.linspace(-40, 40, d)            # the dense grid of differences 0 … −80
    x[3] = torch.linspace(-1, 1, d) * 1e-3       # tiny differences
    x[4] = 200.0                                 # large equal values
    x[5, :] = 7.0
    x[5, -1] = 7.0 + 2 ** -16                    # a tie broken by one unit
    return x


def _secure(x, mask=None, spec=ReluSpec(), received=None):
    def prog(sess):
        if received is not None and sess.rank < 2:
            record_received(sess, received)
        xs = share_input(sess, x if sess.rank == 0 else None, 0, tuple(x.shape))
        return reveal(sess, softmax(sess, xs, spec, mask))
    return run(prog, 2)


def test_softmax_is_within_its_stated_error_with_exact_costs_and_hidden_values():
    x = _rows()
    received: list = []
    res = _secure(x, received=received)
    out = res.results[0]
    ref = torch.softmax(x.double(), -1)
    assert float((out - ref).abs().max()) <= 4e-4
    assert torch.allclose(out.sum(-1), torch.ones(64, dtype=torch.float64), atol=2e-3)
    st = res.reports[0].online
    sent = sum(v for (dst, tag), v in st.sent.items() if tag not in ("input", "output", "open", "offline"))
    cost = softmax_cost(64, 65)
    assert sent * 8 == cost["bits"]
    assert sum(r for t, r in st.rounds.items() if t != "open") == cost["rounds"] == 87
    # neither the input nor the output reaches a server in the clear
    for secret in (torch.round(x * 2 ** 16).to(torch.int64).reshape(-1),
                   torch.round(ref * 2 ** 16).to(torch.int64).reshape(-1)):
        for flat in received:
            if flat.numel() >= secret.numel():
                assert ((flat[:secret.numel()] - secret).abs() < 2 ** 10).double().mean() < 0.05


def test_masked_softmax_gives_masked_positions_exactly_zero():
    x = _rows(d=16)
    gen = torch.Generator().manual_seed(1)
    keep = torch.rand(64, 16, generator=gen) > 0.4
    keep[:, 5] = True
    keep[2, :] = False
    keep[2, 15] = True  # one kept position only: its weight is 1
    out = _secure(x, keep).results[0]
    ref = torch.softmax(x.double().masked_fill(~keep, float("-inf")), -1)
    assert bool((out[~keep] == 0).all())
    assert float((out - ref).abs().max()) <= 4e-4
    with pytest.raises(ValueError, match="every position masked"):
        prepare_mask(torch.zeros(2, 4, dtype=torch.bool), (2, 4))


def test_softmax_on_reduced_bits_of_the_comparisons():
    """HummingBird's bits on the max and the clip: with [k:m] = [24:8] at f = 16 (values below
    2^7, differences resolved to 2^−8) the error stays within 2^−8 of a softmax's derivative."""
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(2)) * 3
    spec = ReluSpec(24, 8)
    res = _secure(x, spec=spec)
    ref = torch.softmax(x.double(), -1)
    assert float((res.results[0] - ref).abs().max()) <= 2e-2
    st = res.reports[0].online
    sent = sum(v for (dst, tag), v in st.sent.items() if tag not in ("input", "output", "open", "offline"))
    assert sent * 8 == softmax_cost(64, 32, spec)["bits"] < softmax_cost(64, 32)["bits"]


def test_the_float_model_is_what_the_secure_run_computes_and_shows_a_broken_max():
    """softmax_float (the search's simulation) follows the protocol: within 2e-4 of the secure
    run with exact decisions; with an identity 'ReLU' (a width-0 ring) the max is the row's first
    element and the fits are extrapolated: the error shows instead of cancelling out."""
    from ringlet.protocols.softmax import softmax_float
    x = _rows()
    secure = _secure(x).results[0]
    model = softmax_float(x.double(), torch.relu)
    assert float((secure - model).abs().max()) < 2e-4
    broken = softmax_float(x.double(), lambda v: v)
    assert float((broken - torch.softmax(x.double(), -1)).nan_to_num(1e9).abs().max()) > 0.1
