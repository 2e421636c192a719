"""Private runs of timm's CNNs as timm writes them (random init, BatchNorm calibrated on random
images, 3×32×32, 2 servers, the default options): argmax agreement and logit error against torch.

    .venv/bin/python scripts/timm_private.py [MODEL ...]

Needs timm (``make setup`` installs it for the tests); prints one line per model.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from zoo_models import calibrated, timm  # noqa: E402

import ringlet  # noqa: E402

MODELS = ["resnet18", "resnet50", "mobilenetv2_100", "mobilenetv3_small_100", "efficientnet_b0",
          "regnetx_002", "densenet121", "vgg11_bn", "ghostnet_100", "rexnet_100", "mixnet_s",
          "tf_efficientnet_lite0"]


def main(names: list[str]) -> None:
    for name in names or MODELS:
        torch.manual_seed(0)  # public random weights
        model = calibrated(timm().create_model(name, num_classes=10))
        x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pm = ringlet.compile(model, x)
        with torch.no_grad():
            ref = model(x)
        res = pm.infer(x, batch=4)
        scale = float(ref.abs().max())
        err = float((res.logits - ref).abs().max())
        flips = sum("top-1" in str(w.message) for w in caught)
        print(f"{name}: argmax {int((res.logits.argmax(1) == ref.argmax(1)).sum())}/4, max |logit error| "
              f"{err:.2e} = {err / scale:.2e} × scale {scale:.2f}; {res.report['comparisons_per_image']} "
              f"comparisons, {res.report['bytes_sent_per_image'] / 1e6:.1f} MB and {res.report['rounds']} "
              f"rounds per image; approximation warnings {flips}; {time.perf_counter() - t0:.0f} s",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
