"""``ringlet report``: markdown tables and PNG plots from a suite JSON (and scale / sharing / poly).

Figures follow the HummingBird paper's Section 5: speedup per configuration and link (Figures 7, 9),
normalised bytes and rounds (Figure 11), the compute vs communication split and the per-tag bytes
(Figures 10 and 3), kept bits per group (Figure 12), search time (Table 2), finetuning (Table 3).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ringlet.plots import _pyplot, kept_bits_plot

MB = 1e6


def _fmt(v, spec=".4f"):
    return "—" if v is None else format(v, spec)


def _runs_by(result: dict, model: str) -> dict:
    return {(r["config"], r["link"]["name"]): r for r in result["runs"] if r["model"] == model}


def headline(result: dict) -> str:
    """The table the README shows: one row per model and configuration."""
    lines = []
    models = sorted({r["model"] for r in result["runs"]})
    links = [lk["name"] for lk in result["links"]]
    for model in models:
        runs = _runs_by(result, model)
        configs = [c for c in dict.fromkeys(r["config"] for r in result["runs"] if r["model"] == model)]
        base: dict[str, Any] = {lk: runs.get(("exact-crypten", lk)) for lk in links}  # None: no baseline
        head = ["config", "accuracy", "MB / image", "rounds"] + [f"s ({lk})" for lk in links] + \
               ["comm ÷ (vs CrypTen)"] + [f"speedup {lk}" for lk in links]
        lines += [f"**{model}** ({result['samples']} test images, {result['parties']} servers)", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for cfg in configs:
            first = next(runs[(cfg, lk)] for lk in links if (cfg, lk) in runs)
            row = [cfg, _fmt(first["accuracy"]), f"{first['bytes_per_image'] / MB:.2f}", str(first["rounds"])]
            row += [_fmt(runs[(cfg, lk)]["seconds_online"], ".2f") if (cfg, lk) in runs else "—" for lk in links]
            b = next((v for v in base.values() if v), None)
            row.append(f"{b['bytes_sent_per_party'] / first['bytes_sent_per_party']:.2f}×" if b else "—")
            for lk in links:
                ok = base[lk] and (cfg, lk) in runs
                row.append(f"{base[lk]['seconds_online'] / runs[(cfg, lk)]['seconds_online']:.2f}×" if ok else "—")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def _configs(result: dict, model: str) -> list[str]:
    """The model's configurations in the order of the result's runs."""
    return list(dict.fromkeys(r["config"] for r in result["runs"] if r["model"] == model))


def _links(result: dict, model: str) -> list[dict]:
    """The links the model has runs on: the result's order, then any link only a run names."""
    used = {r["link"]["name"]: r["link"] for r in result["runs"] if r["model"] == model}
    listed = [lk for lk in result.get("links", []) if lk["name"] in used]
    names = {lk["name"] for lk in listed}
    return listed + [lk for name, lk in used.items() if name not in names]


def _link_title(link: dict) -> str:
    title = f"{link['name']}: {link.get('bandwidth_mbps', 0):g} Mbit/s"
    return title + (f", {link['rtt_ms']:g} ms RTT" if link.get("rtt_ms") else "")


def _panel_width(n_configs: int) -> float:
    """Inches for one panel of ``n_configs`` bars with their rotated labels."""
    return max(2.8, 0.45 * n_configs + 1.0)


def _config_axis(ax, configs: list[str]) -> None:
    """Configurations as x ticks, rotated once they would run into each other."""
    ax.set_xticks(range(len(configs)), configs)
    ax.set_xlim(-0.6, len(configs) - 0.4)
    if len(configs) > 3 or max(map(len, configs), default=0) > 8:
        ax.tick_params(axis="x", labelsize=7)
        for label in ax.get_xticklabels():
            label.set(rotation=40, ha="right", rotation_mode="anchor")


def _missing(ax, xs, text="n/a") -> None:
    for x in xs:
        ax.text(x, 0, text, ha="center", va="bottom", fontsize=6, color="0.45",
                transform=ax.get_xaxis_transform())


def _speedup_plot(result, model, path):
    """One panel per link, shared y: online speedup of each configuration over exact-crypten."""
    plt = _pyplot()
    runs = _runs_by(result, model)
    links, configs = _links(result, model), _configs(result, model)
    fig, axes = plt.subplots(1, len(links), sharey=True, squeeze=False, layout="constrained",
                             figsize=(len(links) * _panel_width(len(configs)), 3.8))
    for ax, link in zip(axes[0], links):
        lk = link["name"]
        base = runs.get(("exact-crypten", lk))
        have = [i for i, c in enumerate(configs) if base and (c, lk) in runs]
        vals = [base["seconds_online"] / runs[(configs[i], lk)]["seconds_online"] for i in have]
        bars = ax.bar(have, vals, 0.7, color="#2a7ab9")
        ax.bar_label(bars, fmt="%.1f×", fontsize=7)
        ax.axhline(1, color="0.6", lw=0.8, ls="--")
        _missing(ax, [i for i in range(len(configs)) if i not in have],
                 "n/a" if base else "no base")
        _config_axis(ax, configs)
        ax.set_title(_link_title(link), fontsize=9)
    axes[0][0].set_ylabel("online speedup over exact-crypten")
    axes[0][0].margins(y=0.1)  # room for the labels above the bars
    axes[0][0].set_ylim(bottom=0)
    fig.suptitle(f"{model}: end-to-end speedup per link (Figures 7, 9)")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return fig


def _comm_rounds_plot(result, model, path):
    """Bytes and rounds of each configuration over exact-crypten's (both independent of the link, so
    one panel: each configuration is read on the first link that has it and the baseline)."""
    plt = _pyplot()
    runs = _runs_by(result, model)
    links, configs = [lk["name"] for lk in _links(result, model)], _configs(result, model)
    pairs = {c: next(((runs[(c, lk)], runs[("exact-crypten", lk)]) for lk in links
                      if (c, lk) in runs and ("exact-crypten", lk) in runs), None) for c in configs}
    fig, ax = plt.subplots(figsize=(max(7.0, 2 * _panel_width(len(configs)) - 1), 3.8),
                           layout="constrained")
    have = [i for i, c in enumerate(configs) if pairs[c]]
    b = [pairs[configs[i]][0]["bytes_sent_per_party"] / pairs[configs[i]][1]["bytes_sent_per_party"]
         for i in have]
    r = [pairs[configs[i]][0]["rounds"] / pairs[configs[i]][1]["rounds"] for i in have]
    ax.bar([x - 0.2 for x in have], b, 0.4, label="bytes")
    ax.bar([x + 0.2 for x in have], r, 0.4, label="rounds")
    _missing(ax, [i for i in range(len(configs)) if i not in have], "no base")
    _config_axis(ax, configs)
    ax.set_ylabel("normalised to exact-crypten")
    ax.set_title(f"{model}: communication and rounds (Figure 11)")
    if have:
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return fig


def _breakdown_plot(result, model, path):
    """Top row, one panel per link: online seconds split into compute and communication (own y
    scale each: a slow link's seconds would flatten a fast one's). Bottom, across: bytes by protocol
    part per configuration (independent of the link; each read on the first link that has it)."""
    plt = _pyplot()
    runs = _runs_by(result, model)
    links, configs = _links(result, model), _configs(result, model)
    fig = plt.figure(figsize=(max(7.0, len(links) * _panel_width(len(configs))), 7.2),
                     layout="constrained")
    grid = fig.add_gridspec(2, len(links))
    for j, link in enumerate(links):
        ax = fig.add_subplot(grid[0, j])
        lk = link["name"]
        have = [i for i, c in enumerate(configs) if (c, lk) in runs]
        comp = [runs[(configs[i], lk)]["seconds_compute"] for i in have]
        comm = [runs[(configs[i], lk)]["seconds_communication"] for i in have]
        ax.bar(have, comp, 0.7, label="compute", color="#2a7ab9")
        ax.bar(have, comm, 0.7, bottom=comp, label="communication", color="#f28e2b")
        _missing(ax, [i for i in range(len(configs)) if i not in have])
        _config_axis(ax, configs)
        ax.set_title(_link_title(link), fontsize=9)
        if j == 0:
            ax.set_ylabel("online seconds")
            ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[1, :])
    first = {c: next((runs[(c, lk["name"])] for lk in links if (c, lk["name"]) in runs), None)
             for c in configs}
    have = [i for i, c in enumerate(configs) if first[c]]
    bottom = [0.0] * len(have)
    for part in ("circuit", "mult", "b2a", "other"):
        vals = [first[configs[i]]["breakdown_bytes"][part] / MB for i in have]
        ax.bar(have, vals, 0.6, bottom=bottom, label=part)
        bottom = [a + b for a, b in zip(bottom, vals)]
    _config_axis(ax, configs)
    ax.set_ylabel("MB sent per server")
    ax.set_title("bytes by protocol part (Figure 3)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"{model}: compute vs communication per link (Figure 10)")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return fig


def _tables(result: dict, model: str) -> list[str]:
    out = []
    runs = [r for r in result["runs"] if r["model"] == model]
    out += ["| config | link | MB sent / server | circuit | mult | b2a | other | compute s | comm s | "
            "measured s (shaper) | real link s (tbf) | projected s |", "|" + "---|" * 12]
    for r in runs:
        b = r["breakdown_bytes"]
        out.append(f"| {r['config']} | {r['link']['name']} | {r['bytes_sent_per_party'] / MB:.1f} | "
                   f"{b['circuit'] / MB:.1f} | {b['mult'] / MB:.1f} | {b['b2a'] / MB:.1f} | "
                   f"{b['other'] / MB:.1f} | {r['seconds_compute']:.2f} | "
                   f"{r['seconds_communication']:.2f} | {r['seconds_online']:.2f} | "
                   f"{_fmt(r.get('seconds_online_real_link'), '.2f')} | {r['projected_seconds']:.2f} |")
    searches = result.get("searches", {}).get(model, {})
    rows = [(name, rep) for name, rep in searches.items() if "search_seconds" in rep]
    if rows:
        out += ["", "Search (Table 2) and accuracy on the test split:", "",
                "| search | configurations | seconds | exact | result | naive |", "|---|---|---|---|---|---|"]
        for name, rep in rows:
            res = rep.get("eco_accuracy", rep.get("budget_accuracy"))
            out.append(f"| {name} | {rep['configs_evaluated']} | {rep['search_seconds']:.0f} | "
                       f"{_fmt(rep['exact_accuracy'])} | {_fmt(res)} | {_fmt(rep.get('naive_accuracy'))} |")
    fts = [(name, rep) for name, rep in searches.items() if "accuracy_after" in rep]
    if fts:
        out += ["", "Finetuning (Table 3):", "", "| config | epochs | before | after |", "|---|---|---|---|"]
        for name, rep in fts:
            out.append(f"| {name} | {rep['epochs']} | {_fmt(rep['accuracy_before'])} | "
                       f"{_fmt(rep['accuracy_after'])} |")
    return out


def scale_section(scale: dict, out: Path) -> list[str]:
    """Time, bytes and memory against batch size and number of servers (a ``bench scale`` JSON)."""
    plt = _pyplot()
    rows = scale["rows"]
    two = sorted((r for r in rows if r["parties"] == 2), key=lambda r: r["batch"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, label in zip(axes, ("seconds_online", "bytes_sent_per_party", "peak_rss_mb_all"),
                              ("online seconds", "bytes sent per server", "peak memory, all parties (MB)")):
        ax.plot([r["batch"] for r in two], [r[key] for r in two], "o-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (2 servers)")
        ax.set_ylabel(label)
    fig.suptitle(f"{scale['model']}: scaling with batch size")
    fig.tight_layout()
    png = f"{scale['model']}-scale.png"
    fig.savefig(out / png, dpi=130)
    plt.close(fig)
    lines = [f"## Scaling: {scale['model']}", "", f"Produced by: `{scale.get('command', '')}`", "",
             f"![scaling]({png})", "", "| servers | batch | online s | MB sent / server | rounds | "
             "peak MB (max party) | peak MB (all) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['parties']} | {r['batch']} | {r['seconds_online']:.2f} | "
                     f"{r['bytes_sent_per_party'] / MB:.1f} | {r['rounds']} | "
                     f"{r['peak_rss_mb_max_party']:.0f} | {r['peak_rss_mb_all']:.0f} |")
    lines += ["", f"Memory grows by {scale['memory_mb_per_image']:.1f} MB per image over a fixed "
                  f"{scale['memory_mb_fixed']:.0f} MB (all parties on one host); this machine's "
                  f"{scale['machine_memory_mb'] / 1024:.1f} GiB end at a batch of about "
                  f"{scale['max_batch_in_memory']} images.", ""]
    return lines


def write_report(results_path: str, out_dir: str, extra: Sequence[str] = ()) -> Path:
    result = json.loads(Path(results_path).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# ringlet evaluation report", "", f"Produced by: `{result.get('command', '')}`", "",
             headline(result)]
    for model in sorted({r["model"] for r in result.get("runs", [])}):
        slug = model.replace("/", "_")
        _speedup_plot(result, model, out / f"{slug}-speedup.png")
        _comm_rounds_plot(result, model, out / f"{slug}-comm-rounds.png")
        _breakdown_plot(result, model, out / f"{slug}-breakdown.png")
        lines += [f"## {model}", "", f"![speedup]({slug}-speedup.png)",
                  f"![bytes and rounds]({slug}-comm-rounds.png)", f"![breakdown]({slug}-breakdown.png)", ""]
        lines += _tables(result, model)
        for name, rep in result.get("searches", {}).get(model, {}).items():
            if "bits_kept_per_group" in rep:
                png = f"{slug}-{name}-kept-bits.png"
                kept_bits_plot(rep["bits_kept_per_group"], str(out / png), f"{model}: {name}")
                lines += ["", f"![kept bits {name}]({png})"]
        lines.append("")
    if "summary" in result:
        lines += ["## Summary ratios", "", "```json", json.dumps(result["summary"], indent=1), "```", ""]
    for path in extra:
        data = json.loads(Path(path).read_text())
        if "memory_mb_per_image" in data:
            lines += scale_section(data, out)
        elif "markdown" in data:  # sections produced by other benchmarks (sharing, polynomials)
            import shutil
            for png in data.get("plots", []):
                src = Path(png) if Path(png).is_absolute() else Path(path).parent / Path(png).name
                if src.is_file():
                    shutil.copy(src, out / src.name)
            lines += [data["markdown"], ""]
        else:
            raise ValueError(f"{path}: not a results file ringlet report knows")
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md
