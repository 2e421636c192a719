"""``ringlet query --deploy D --input IMG_OR_NPY [--json]``: one private query to a deployment.

The input is a PNG/JPEG image or a .npy array (uint8 pixels, normalised with the model's
normalisation, or float model inputs; one C×H×W input or N of them). It is secret-shared here; each
server receives only its share; the logits are reconstructed here.
"""

from __future__ import annotations

import time

from ringlet.cli.common import add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="query a running deployment privately")
    p.add_argument("--deploy", required=True, help="the deployment file (TOML or JSON)")
    p.add_argument("--input", required=True, help="an image (PNG/JPEG) or a .npy array")
    p.add_argument("--name", default="client", help="this client's party name (its certificate)")
    p.add_argument("--timeout", type=float, help="seconds to wait for the answer (default: the "
                                                 "deployment's query timeout)")
    p.add_argument("--output", help="write the logits as .npy")
    p.add_argument("--json", action="store_true")
    add_debug(p)
    p.set_defaults(run=run)


def _inputs(path: str, info: dict):
    import tempfile
    from pathlib import Path

    import numpy as np

    from ringlet.data.sources import load_arrays
    norm = info.get("normalization")
    norm = (tuple(norm["mean"]), tuple(norm["std"])) if norm else None
    if Path(path).suffix.lower() != ".npy":
        from PIL import Image
        channels = info["input_shape"][0]
        try:
            img = Image.open(path).convert("L" if channels == 1 else "RGB")
        except OSError as exc:
            raise ValueError(f"--input {path}: not an image ({exc})") from None
        h, w = info["input_shape"][1:]
        if img.size != (w, h):
            raise ValueError(f"--input {path}: the image is {img.size[0]}×{img.size[1]}, the model "
                             f"takes {w}×{h}")
        arr = np.asarray(img, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "x.npy", arr)
            return load_arrays(Path(tmp) / "x.npy", normalization=norm)[0]
    return load_arrays(path, normalization=norm)[0]


def run(args):
    from ringlet.serve.client import Client
    with Client(args.deploy, name=args.name, timeout=args.timeout) as client:
        info = client.status()[0]
        x = _inputs(args.input, info)
        t0 = time.perf_counter()
        logits = client.query(x)
        seconds = time.perf_counter() - t0
    if args.output:
        import numpy as np
        np.save(args.output, logits.numpy())
    out = {"command": command_line(), "inputs": int(logits.shape[0]),
           "predictions": logits.argmax(1).tolist(), "logits": logits.tolist(),
           "seconds": seconds}
    if args.json:
        print_json(out)
    else:
        for i, (p, row) in enumerate(zip(out["predictions"], logits)):
            print(f"input {i}: class {p} (logits {', '.join(f'{v:.3f}' for v in row.tolist())})")
        print(f"{seconds * 1000:.1f} ms")
    return 0
