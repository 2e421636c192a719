"""Hugging Face's BertForSequenceClassification, as written, privately (issue 24's target): a small
config (2 layers × 128 by default, 128 tokens), seeded weights, 16 inputs of random token ids;
prints the argmax agreement with torch, the max |logit error|, and online seconds, MB and rounds
per inference, with torch's own forward time measured in the same command.

    .venv/bin/python scripts/hf_bert_private.py [--layers 2] [--width 128] [--tokens 128]
        [--inputs 16] [--transport tcp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from zoo_models import timm  # noqa: E402  (the torchvision schemas transformers' import needs)

import ringlet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=16)
    ap.add_argument("--transport", default="tcp")
    args = ap.parse_args()
    timm()
    import transformers
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=args.width, num_hidden_layers=args.layers,
                                  num_attention_heads=max(1, args.width // 64), intermediate_size=4 * args.width,
                                  max_position_embeddings=512, num_labels=2)
    torch.manual_seed(0)  # public weights and inputs of a measurement
    model = transformers.BertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (args.inputs, args.tokens))
    t0 = time.perf_counter()
    pm = ringlet.compile(model, ids)
    compile_s = time.perf_counter() - t0
    res = pm.infer(ids, transport=args.transport, batch=1)
    with torch.no_grad():
        ref = model(input_ids=ids).logits.double()
        plain = []
        for i in range(args.inputs):
            t1 = time.perf_counter()
            model(input_ids=ids[i:i + 1])
            plain.append(time.perf_counter() - t1)
    rep = res.report
    online = rep["seconds_online"] / args.inputs
    print(json.dumps({
        "command": " ".join(["python"] + sys.argv),
        "config": {"layers": args.layers, "width": args.width, "tokens": args.tokens, "inputs": args.inputs,
                   "transport": args.transport},
        "argmax_agreement": float((res.logits.argmax(1) == ref.argmax(1)).double().mean()),
        "max_abs_logit_error": float((res.logits - ref).abs().max()),
        "seconds_online_per_inference": online,
        "mb_per_party_per_inference": rep["bytes_sent_per_image"] / 1e6,
        "rounds": rep["rounds"],
        "plaintext_seconds_per_inference": statistics.median(plain),
        "online_over_plaintext": online / statistics.median(plain),
        "compile_seconds": compile_s,
        "by_kind": {k: round(v["bytes_share"], 3) for k, v in rep["by_kind"].items() if v["bytes_share"] > 0.001},
    }, indent=2))


if __name__ == "__main__":
    main()
