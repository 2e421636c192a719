"""Polynomial activations: fit, one-round evaluation vs plaintext, rounds and bits, PILLAR."""

import pytest
import torch
from conftest import run

from ringlet.poly.layers import PolyAct, convert_to_poly, fit_relu
from ringlet.poly.pillar import Pillar, penalty
from ringlet.protocols.arith import poly
from ringlet.protocols.io import reveal, share_input


def test_fit_matches_the_papers_degree_four_coefficients():
    fit = fit_relu(4, 5.0, 10)
    assert fit["coeffs"] == pytest.approx([0.3145, 0.5, 0.1563, 0.0, -0.0029], abs=6e-4)
    # with enough coefficient bits, rounding costs little (2^-10 is too coarse above degree 5 on
    # [-5, 5]: the high-order coefficients are below 2^-11)
    for d, q in {2: 10, 3: 10, 4: 12, 5: 12, 6: 12, 7: 12, 8: 18}.items():
        f = fit_relu(d, 5.0, q)
        assert all(abs(c * 2 ** q - round(c * 2 ** q)) < 1e-9 for c in f["coeffs"])  # quantised
        assert f["max_error"] < f["unquantised_max_error"] + 0.01
        assert poly.coeff_bits(f["coeffs"]) <= q
    with pytest.raises(ValueError):
        fit_relu(9)


def _program(values, coeffs, method, out_truncation):
    def prog(sess):
        x = share_input(sess, values if sess.rank == 0 else None, 0, tuple(values.shape))
        before = sess.stats.copy()
        y = poly.evaluate(sess, x, coeffs, 16, method, out_truncation=out_truncation)
        used = sess.stats.minus(before)
        return reveal(sess, y), used.bytes_sent(exclude=("offline",)), used.total_rounds(exclude=("offline",))
    return prog


@pytest.mark.parametrize("method", poly.METHODS)
@pytest.mark.parametrize("out_truncation", ["dealer", "local"])
def test_evaluation_matches_the_plaintext_polynomial_with_exact_costs(parties, method, out_truncation):
    coeffs = fit_relu(4, 5.0)["coeffs"]
    x = torch.cat([torch.linspace(-5, 5, 500).double(), torch.tensor([0.0, 5.0, -5.0, 1e-4])])
    ref = sum(c * x ** j for j, c in enumerate(coeffs))
    res = run(_program(x, coeffs, method, out_truncation), parties).results
    err = (res[0][0] - ref).abs()
    if out_truncation == "local" and method != "horner":  # rare, counted failures are allowed
        assert (err > 1e-2).sum() <= 2
    else:
        assert err.max() <= 1e-2
    n = x.numel()
    want = poly.cost(method, 4, parties, out_truncation)
    assert max(8 * r[1] for r in res) == want["bits"] * n
    assert max(r[2] for r in res) == want["rounds"]
    if method in ("espn", "honeybadger") and parties == 2 and out_truncation == "local":
        assert want["rounds"] == 1


def test_inputs_beyond_the_bound_wrap_and_are_predicted():
    coeffs = fit_relu(4, 5.0)["coeffs"]
    bound = poly.input_bound(coeffs, poly.default_frac(4))  # q = 10 for the paper's coefficients
    x = torch.tensor([bound * 0.9, bound * 1.5]).double()
    out = run(_program(x, coeffs, "espn", "dealer"), 2).results[0][0]
    ref = sum(c * x ** j for j, c in enumerate(coeffs))
    # inside: only the input's f_p-bit quantisation (relative 1e-3); beyond: garbage
    assert abs(out[0] - ref[0]) < 1e-3 * abs(ref[0]) and abs(out[1] - ref[1]) > 1e3


def test_penalty_equals_its_formula_on_a_hand_made_tensor():
    x = torch.tensor([[1.0, -2.0], [4.0, 0.5]])
    assert penalty(x, 2.0, 4).item() == pytest.approx(((0.5 ** 4) + 1 + 2 ** 4 + 0.25 ** 4) / 2)


def test_polyact_clips_only_in_training_and_tracks_range():
    act = PolyAct([0.0, 1.0], r=2.0)
    x = torch.tensor([[-3.0, 1.0, 5.0]])
    assert torch.equal(act.train()(x), torch.tensor([[-2.0, 1.0, 2.0]]))
    assert torch.equal(act.eval()(x), x)
    assert act.stats["out_of_range"] == 2 and act.stats["max_abs"] == 5.0  # training inputs only
    act.track_eval = True
    act.eval()(x * 2)
    assert act.stats["out_of_range"] == 4 and act.stats["max_abs"] == 10.0


def test_pillar_lowers_the_out_of_range_fraction():
    torch.manual_seed(0)  # test data only
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    convert_to_poly(model, {"degree": 2, "range": 1.0})
    with torch.no_grad():
        model[0].weight *= 4  # push the polynomial's inputs out of range
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).long()
    act = model[1]

    def out_fraction():
        act.reset_stats()
        model.eval()
        act.track_eval = True
        with torch.no_grad():
            model(x)
        act.track_eval = False
        s = act.reset_stats()
        return s["out_of_range"] / s["count"]

    before = out_fraction()
    reg = Pillar(model, coefficient=1e-2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()
    for epoch in range(4):
        for _ in range(25):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y) + reg.loss(model, epoch)
            loss.backward()
            opt.step()
        reg.end_epoch(epoch, {})
    assert out_fraction() < before
    assert [h["exponent"] for h in reg.history] == [4, 6, 8, 10]


@pytest.mark.parametrize("out_truncation,rounds", [("local", 1), ("dealer", 2)])
def test_polynomial_model_private_inference(out_truncation, rounds):
    import functools

    from ringlet.compiler.capture import compile_model
    from ringlet.compiler.model import CompiledModel, SecureOptions
    from ringlet.models import build_model
    from ringlet.runtime.programs import client_program, server_program
    torch.manual_seed(2)  # test data only
    model = build_model("svhn-net", (1, 16, 16))
    convert_to_poly(model, {"degree": 4, "range": 5})
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)  # keep the polynomial inputs inside [-5, 5]
    model.eval()
    x = torch.randn(4, 1, 16, 16)
    ref = model(x).double()
    compiled = CompiledModel(compile_model(model, (1, 16, 16)),
                             options=SecureOptions(poly_out_truncation=out_truncation))
    assert {n.kind for n in compiled.graph.nodes} >= {"poly"}
    server = functools.partial(server_program, model=compiled)
    client = functools.partial(client_program, images=x, batch=4, progress=False)
    res = run(server, 2, client=client)
    assert torch.allclose(res.client_result["logits"], ref, atol=0.05)
    for row in res.servers[0].result["per_layer"]:
        if row["kind"] == "poly":
            assert row["rounds"] == rounds


def test_local_output_truncation_uses_the_fewest_input_bits_within_the_error_bound():
    coeffs = fit_relu(4, 5.0)["coeffs"]
    f = poly.local_frac(coeffs, 5.0)
    assert f < poly.default_frac(4)
    p = lambda v: sum(c * v ** j for j, c in enumerate(coeffs))  # noqa: E731
    x = torch.linspace(-5, 5, 4001).double()
    for unit in (2.0 ** -f, -2.0 ** -f):  # a local truncation is off by less than one unit
        assert (p(x + unit) - p(x)).abs().max() <= 1e-2
    coarser = 2.0 ** -(f - 1)
    assert (p(x + coarser) - p(x)).abs().max() > 1e-2  # one bit fewer would break the bound
    want = float(p(x).abs().sum()) * 2.0 ** (4 * f + 10 - 64)
    assert poly.local_failure_rate(coeffs, f, x) == pytest.approx(want)
    assert poly.local_failure_rate(coeffs, poly.default_frac(4), x) > 1000 * want
