"""``ringlet bench activations``: ReLU exact / eco / 8-64 against a PILLAR polynomial model (ESPN),
accuracy and online time on LAN and WAN with added latency (the ESPN paper's Figure 2 style).

Configs: ``exact``, ``eco``, ``8/64`` (the shipped ReLU model and its search results), ``poly`` (the
polynomial model, ESPN with the exact output truncation: 2 rounds per layer) and ``poly-local`` (ESPN
with the local output truncation: 1 round per layer, rare failures; see ringlet.protocols.arith.poly);
``poly@METHOD`` / ``poly-local@METHOD`` evaluate with another method (e.g. ``@honeybadger``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ringlet.bench.suite import config_setup, shipped_stem
from ringlet.comm.shaper import PROFILES, LinkProfile
from ringlet.jobs.infer import run_inference
from ringlet.train.checkpoint import find_checkpoint, read_meta


def run_activations(model: str = "resnet20", poly_model: str | None = None,
                    configs=("exact", "eco", "8/64", "poly", "poly-local", "poly-local@honeybadger"),
                    links=("lan", "wan"),
                    latencies=(0, 25, 50, 100), samples: int = 32, batch: int = 32,
                    poly_method: str = "espn", out: str | None = None, log=print,
                    command: str = "") -> dict:
    stem = shipped_stem(model)
    poly_model = poly_model or f"{stem}-poly4"
    rows = []
    for config in configs:
        kind, _, method = config.partition("@")
        if kind in ("poly", "poly-local"):
            if not find_checkpoint(poly_model):
                raise ValueError(f"no polynomial checkpoint {poly_model!r} (train one with "
                                 f"ringlet train --poly ... --pillar ...)")
            setup: dict[str, Any] = {"model": poly_model, "poly_method": method or poly_method,
                     "poly_out_truncation": "local" if kind == "poly-local" else "dealer"}
        elif method:
            raise ValueError(f"config {config!r}: only poly and poly-local take @METHOD")
        else:
            setup = {"model": stem, **config_setup(stem, config)}
        for link_name in links:
            for rtt in latencies:
                base = PROFILES[link_name]
                link = LinkProfile(f"{link_name}+{rtt}ms", base.bandwidth_bps, rtt / 1e3)
                args = dict(setup)
                name = args.pop("model")
                rep, _ = run_inference(name, samples=samples, batch=batch, link=link,
                                       progress=False, **args)
                row = {"config": config, "checkpoint": name, "link": link_name, "rtt_ms": rtt,
                       "accuracy": rep.get("accuracy"), "seconds_online": rep["seconds_online"],
                       "seconds_per_image": rep["seconds_online"] / samples,
                       "bytes_per_image": rep["bytes_sent_per_image"], "rounds": rep["rounds"]}
                rows.append(row)
                if log:
                    log(f"{config:6s} {link_name:4s} +{rtt:3d} ms: acc {row['accuracy']:.4f} "
                        f"{row['seconds_online']:.2f} s, {row['rounds']} rounds")
    result = {"command": command, "model": stem, "poly_model": poly_model, "samples": samples,
              "rows": rows}
    poly_path = find_checkpoint(poly_model)
    if poly_path:  # PILLAR's record: out-of-range inputs per epoch and at test time
        result["pillar"] = read_meta(poly_path).get("pillar")
    for poly_config in dict.fromkeys(r["config"] for r in rows if r["config"].startswith("poly")):
        key = "speedup_" + poly_config.replace("-", "_").replace("@", "_") + "_vs_exact"
        result[key] = {
            f"{lk}+{rtt}ms": _pick(rows, "exact", lk, rtt) / _pick(rows, poly_config, lk, rtt)
            for lk in links for rtt in latencies
            if _pick(rows, "exact", lk, rtt) and _pick(rows, poly_config, lk, rtt)}
    if out:
        png = Path(out).with_suffix(".png")
        _plot(result, png)
        result["plots"] = [str(png)]
        result["markdown"] = markdown(result, png.name)
        Path(out).write_text(json.dumps(result, indent=1))
    return result


def _pick(rows, config, link, rtt):
    hit = [r["seconds_online"] for r in rows if (r["config"], r["link"], r["rtt_ms"]) == (config, link, rtt)]
    return hit[0] if hit else None


def _plot(result, path: Path) -> None:
    from ringlet.plots import _pyplot
    plt = _pyplot()
    links = sorted({r["link"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(links), figsize=(5.5 * len(links), 3.6), squeeze=False)
    for ax, link in zip(axes[0], links):
        for config in dict.fromkeys(r["config"] for r in result["rows"]):
            pts = sorted((r["rtt_ms"], r["seconds_per_image"]) for r in result["rows"]
                         if r["config"] == config and r["link"] == link)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=config)
        ax.set_xlabel("added round-trip latency (ms)")
        ax.set_ylabel("online seconds per image")
        ax.set_title(f"{result['model']}: {link}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown(result: dict, png: str) -> str:
    lines = ["## Polynomial activations against ReLUs", "", f"Produced by: `{result['command']}`", "",
             f"![latency]({png})", "", "| config | link | added RTT ms | accuracy | online s / image | "
             "MB / image | rounds |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['config']} | {r['link']} | {r['rtt_ms']} | {r['accuracy']:.4f} | "
                     f"{r['seconds_per_image']:.3f} | {r['bytes_per_image'] / 1e6:.2f} | {r['rounds']} |")
    pillar = result.get("pillar")
    if pillar and pillar.get("test"):
        test = pillar["test"]
        lines += ["", f"PILLAR (c = {pillar['coefficient']:g}): polynomial inputs outside [−r, r] on the "
                  f"test split: {100 * test['out_of_range_fraction']:.4f} % overall; per layer:", "",
                  "| layer | out of range % | max |x| |", "|---|---|---|"]
        lines += [f"| {name} | {100 * v['out_of_range_fraction']:.4f} | {v['max_abs']:.3g} |"
                  for name, v in test["layers"].items()]
        lines += ["", "| epoch | exponent p | out of range % (training inputs) |", "|---|---|---|"]
        lines += [f"| {h['epoch']} | {h['exponent']} | {100 * h['out_of_range_fraction']:.4f} |"
                  for h in pillar.get("history", [])]
    for key in [k for k in result if k.startswith("speedup_poly")]:
        what = key[len("speedup_"):-len("_vs_exact")]
        lines += ["", f"Speedup of `{what}` over exact ReLU: " + ", ".join(
            f"{k} {v:.2f}×" for k, v in result[key].items())]
    lines += ["", "poly: ESPN with the exact output truncation (2 rounds per layer); poly-local: the local "
              "output truncation (1 round, ~10⁻⁸ failures per element); @honeybadger: the dealer's powers "
              "of a mask instead of ESPN's cross terms (64 bits per element instead of 192)."]
    return "\n".join(lines)
