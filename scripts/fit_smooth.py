"""Fit the accurate smooth activations' pieces and write ringlet/poly/smooth_pieces.json.

    .venv/bin/python scripts/fit_smooth.py [NAME ...]

For each function, every (degree, coefficient bits) below is fitted greedily
(:func:`ringlet.poly.pieces.fit_pieces`); the one with the fewest breakpoints wins (each is a DReLU),
then the lower degree (each power is 64 bits). ringlet measures the shipped pieces' error itself
when it loads them (:func:`ringlet.poly.pieces.accurate_spec`); tests/test_piecewise.py checks it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ringlet.poly.pieces import TARGET, fit_pieces, functions

CONFIGS = [(2, 20), (2, 18), (3, 16), (3, 15), (3, 14)]
OUT = Path(__file__).resolve().parent.parent / "ringlet" / "poly" / "smooth_pieces.json"


def main(names: list[str]) -> None:
    data = json.loads(OUT.read_text()) if OUT.exists() else {"version": 1, "functions": {}}
    data["target"] = TARGET
    for name in names or sorted(functions()):
        fits = [f for f in (fit_pieces(name, d, q) for d, q in CONFIGS) if f is not None]
        best = min(fits, key=lambda f: (len(f["breaks"]), f["degree"]))
        data["functions"][name] = {k: best[k] for k in ("degree", "frac", "breaks", "pieces")}
        print(f"{name}: degree {best['degree']}, q {best['frac']}, {len(best['breaks'])} breakpoints "
              f"{[round(b, 3) for b in best['breaks']]}", flush=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
