"""LayerNorm and RMSNorm on shares: error over variances from 1e-4 to 1e4, exact bits and
rounds, and the servers never see the input."""

from __future__ import annotations

import pytest
import torch
from conftest import record_received, run

from ringlet.protocols.io import reveal, share_input
from ringlet.protocols.norm import layer_norm, layer_norm_cost


def _rows(rows_per_scale=8, d=64, seed=0):
    gen = torch.Generator().manual_seed(seed)  # test data only
    scales = (0.01, 0.1, 1.0, 10.0, 100.0)  # variances 1e-4 … 1e4 (within 2^17 for D = 64)
    x = torch.cat([torch.randn(rows_per_scale, d, generator=gen) * s + torch.randn(rows_per_scale, 1, generator=gen) * s
                   for s in scales])
    return x, scales


@pytest.mark.parametrize("center", [True, False])
def test_layer_norm_is_within_its_stated_error_with_exact_costs(center):
    x, scales = _rows(rows_per_scale=64 // 5 + 1)
    x = x[:64]  # 64 rows: the bit planes' word, so the cost formula is exact
    received: list = []

    def prog(sess):
        if sess.rank < 2:
            record_received(sess, received)
        xs = share_input(sess, x if sess.rank == 0 else None, 0, tuple(x.shape))
        return reveal(sess, layer_norm(sess, xs, 1e-5, center=center))

    res = run(prog, 2)
    out = res.results[0]
    ref = (torch.nn.functional.layer_norm(x.double(), (64,), eps=1e-5) if center else
           x.double() / torch.sqrt((x.double() ** 2).mean(-1, keepdim=True) + 1e-5))
    sigma = torch.sqrt((x.double() - (x.double().mean(-1, keepdim=True) if center else 0)).pow(2).mean(-1) + 1e-5)
    # the stated error: 3e-4 relative (of 1/σ, so of every output), plus the input's precision
    # amplified by 1/σ
    bound = 3e-4 * ref.abs().amax(-1) + 2.0 ** -16 / sigma
    err = (out - ref).abs().amax(-1)
    assert bool((err <= bound).all()), [(float(e), float(g)) for e, b, g in zip(err, bound, sigma) if e > b]
    st = res.reports[0].online
    sent = sum(v for (dst, tag), v in st.sent.items() if tag not in ("input", "output", "open", "offline"))
    cost = layer_norm_cost(64, x.numel())
    if center:  # the mean's local truncation costs nothing; RMSNorm has the same products
        assert sent * 8 == cost["bits"] and sum(r for t, r in st.rounds.items() if t != "open") == cost["rounds"]
    secret = torch.round(x * 2 ** 16).to(torch.int64).reshape(-1)
    for flat in received:
        if flat.numel() >= secret.numel():
            assert ((flat[:secret.numel()] - secret).abs() < 2 ** 10).double().mean() < 0.05


def test_layer_norm_blocks_compile_through_both_front_doors():
    """nn.LayerNorm (with its affine map) and nn.RMSNorm in a residual block, by torch.fx and by
    torch.export (aten.layer_norm / aten.rms_norm), run privately as torch."""
    from torch import nn

    import ringlet

    class Block(nn.Module):
        def __init__(self, d=16):
            super().__init__()
            self.ln, self.fc, self.rms, self.head = nn.LayerNorm(d), nn.Linear(d, d), nn.RMSNorm(d), nn.Linear(d, 3)

        def forward(self, x):
            x = x + self.fc(self.ln(x))
            return self.head(self.rms(x).mean(1))
    torch.manual_seed(0)  # test weights and data only
    model = Block().eval()
    with torch.no_grad():
        model.ln.weight.uniform_(0.5, 1.5)
        model.ln.bias.uniform_(-0.2, 0.2)
    x = torch.randn(4, 6, 16) * 3
    with torch.no_grad():
        ref = model(x)
    for frontend in ("fx", "export"):
        pm = ringlet.compile(model, x, frontend=frontend)
        assert [n.kind for n in pm.graph.nodes].count("layernorm") == 2
        out = pm.infer(x)
        assert float((out.logits - ref).abs().max()) < 1e-3
        assert out.report["comparisons_per_image"] == 2 * 36 * 6  # two norms, 36 DReLUs per row (once)


def test_a_layer_norm_outside_its_range_on_the_calibration_data_is_refused():
    """var + ε beyond what the protocol resolves would give a wrong answer: compile refuses,
    naming the layer and the way out."""
    from torch import nn

    import ringlet
    from ringlet.compiler.capture import CompileError
    model = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 2)).eval()
    with pytest.raises(CompileError, match=r"layer '0': var \+ eps reaches .* resolves .*scale the layer's input down"):
        ringlet.compile(model, torch.randn(4, 64) * 2000)  # var 4e6 > 2^17
    ringlet.compile(model, torch.randn(4, 64) * 100)  # var 1e4: inside
