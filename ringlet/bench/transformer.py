"""Transformers privately at the field's comparison sizes: a ViT of ``layers`` × ``width`` (patch 4
on 32×32, 65 tokens) and a BERT-style encoder (``tokens`` token ids), weights seeded (public in
ringlet; what is measured is the protocol, not the accuracy), 2 servers over the chosen transport.

Each run reports the online seconds, MB and rounds per inference, the max |logit error| against
the float64 plaintext, the share of bytes and time per operator kind, and the plaintext forward
time measured in the same command (the ratio's baseline). The field's figures for the same
sizes, measured by SPU and CrypTen on this kind of machine (weights secret-shared there), are
printed beside them as references with their source; they are not measured by this command.
"""

from __future__ import annotations

import statistics
import time

import torch

#: (seconds online, MB per party, max error) of the same model sizes, 2 parties on loopback,
#: as filed in ringlet's issue 24 (SPU 0.9.5 SEMI2K; CrypTen 0.4.1 after LayerNorm and GELU were
#: rewritten by hand); not measured here
FIELD: dict[str, dict[str, dict]] = {
    "vit": {"spu": {"seconds": 2.3, "mb": 38.7, "max_error": 7.7e-3},
            "crypten": {"seconds": 2.4, "mb": 56.7, "max_error": 1.7e-2}},
    "bert": {"spu": {"seconds": 4.8, "mb": 89.5, "max_error": None},
             "crypten": {"seconds": 3.1, "mb": 158.7, "max_error": 1.7e-2}},
}
FIELD_SOURCE = ("ringlet issue 24 (SPU 0.9.5 SEMI2K and CrypTen 0.4.1, 2 parties over loopback, "
                "weights secret-shared)")


def _models(layers: int, width: int, tokens: int, seed: int):
    from ringlet.models.bert import BertClassifier
    from ringlet.models.vit import ViT
    torch.manual_seed(seed)  # public weights and inputs of a benchmark
    vit = ViT((3, 32, 32), 10, patch=4, dim=width, depth=layers, heads=max(1, width // 64), mlp_ratio=4)
    bert = BertClassifier(tokens=tokens, dim=width, layers=layers, heads=max(1, width // 64),
                          intermediate=4 * width)
    return {"vit": (vit.eval(), torch.randn(8, 3, 32, 32)),
            "bert": (bert.eval(), torch.randint(0, 1000, (8, tokens)))}


def _plain_seconds(model, x, repeats: int = 5) -> float:
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def transformer_bench(models=("vit", "bert"), layers: int = 2, width: int = 128, tokens: int = 128,
                      inputs: int = 1, transport: str = "tcp", seed: int = 0) -> dict:
    """One private inference of ``inputs`` samples of each model; see the module docstring."""
    import ringlet
    out: dict = {"layers": layers, "width": width, "transport": transport, "inputs": inputs,
                 "field_source": FIELD_SOURCE, "models": {}}
    built = _models(layers, width, tokens, seed)
    for name in models:
        model, calib = built[name]
        pm = ringlet.compile(model, calib)
        x = calib[:inputs]
        res = pm.infer(x, transport=transport, batch=inputs)
        rep = res.report
        plain = _plain_seconds(model, x)
        online = rep["seconds_online"] / inputs
        row = {
            "tokens": int(pm.input_shape[0]) if name == "bert" else 65,
            "seconds_online_per_input": online,
            "mb_per_party_per_input": rep["bytes_sent_per_image"] / 1e6,
            "rounds": rep["rounds"],
            "max_abs_logit_error": rep["max_abs_logit_error"],
            "argmax_agreement": rep["argmax_agreement"],
            "plaintext_seconds_per_input": plain / inputs,
            "online_over_plaintext": online / (plain / inputs),
            "by_kind": {k: {"bytes_share": round(v["bytes_share"], 4), "time_share": round(v["time_share"], 4),
                            "rounds": v["rounds"]} for k, v in rep["by_kind"].items()},
            "field": FIELD[name],
            "speedup_vs_spu": FIELD[name]["spu"]["seconds"] / online,
            "speedup_vs_crypten": FIELD[name]["crypten"]["seconds"] / online,
        }
        out["models"][name] = row
    return out
