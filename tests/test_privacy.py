"""What each server receives over the real transport never reveals a plaintext value of the run.

Every tensor a server receives (from the other server, the dealer or the client, recorded by the
TLS transport itself) is compared with every plaintext value of the run — the input, each layer's
output, the logits — both as it is and added to that server's own share of the same value. The
mutation of a server forwarding its output share to the other must be caught.
"""

from __future__ import annotations

import functools

import privacy_programs
import pytest
import torch

from ringlet.ring import Ring

pytestmark = pytest.mark.slow


def _compiled():
    import servezoo

    import ringlet
    torch.manual_seed(1)  # not secret: the test model's public weights
    net = servezoo.tiny_net().eval()
    gen = torch.Generator().manual_seed(2)  # not secret: public calibration inputs
    return ringlet.compile(net, torch.randn(64, 1, 8, 8, generator=gen)).compiled()


def _run(leak: bool):
    from ringlet.runtime.launch import run_local
    model = _compiled()
    gen = torch.Generator().manual_seed(3)  # not secret: the test's input
    x = torch.randn(privacy_programs.BATCH, 1, 8, 8, generator=gen)
    out_shape = tuple(model.graph.nodes[-1].out_shape)
    return run_local(functools.partial(privacy_programs.server, model=model, leak=leak), 2,
                     client=functools.partial(privacy_programs.client, x=x, out_shape=out_shape),
                     transport="tls", timeout=60)


def leaks(run) -> list[str]:
    """Every (server, sender, value) where a received tensor equals a plaintext value of the run,
    alone or plus the server's own share of it."""
    ring = Ring(64)
    results = run.results
    plain = {name: ring.reduce(sum(r["shares"][name] for r in results)).reshape(-1)
             for name in results[0]["shares"]}
    found = []
    for s, res in enumerate(results):
        for src, items in res["received"]:
            for _tag, t in items:
                if t.dtype != torch.int64:
                    continue  # bit planes: a sign decision's shares, not a value of the run
                flat = t.reshape(-1)
                for name, value in plain.items():
                    if value.numel() != flat.numel():
                        continue
                    own = res["shares"][name].reshape(-1)
                    if torch.equal(flat, value):
                        found.append(f"server {s} received {name} from party {src}")
                    if torch.equal(ring.reduce(flat + own), value):
                        found.append(f"server {s} received the other share of {name} from party {src}")
    return found


def test_no_server_receives_a_plaintext_value_over_tls():
    run = _run(leak=False)
    assert len(run.results[1]["received"]) > 10  # the recorder saw the run's traffic
    assert leaks(run) == []
    # the client got the right answer: the check ran on a real inference
    logits = run.client_result
    plain = sum(r["shares"]["logits"] for r in run.results)
    assert torch.equal(Ring(64).reduce(plain), logits)


def test_a_server_forwarding_its_output_share_is_caught():
    found = leaks(_run(leak=True))
    assert any("server 1 received the other share of logits from party 0" in f for f in found), found
