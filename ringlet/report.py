"""``ringlet report``: markdown tables and PNG plots from a suite JSON (and scale / sharing / poly).

Figures follow the HummingBird paper's Section 5: speedup per configuration and link (Figures 7, 9),
normalised bytes and rounds (Figure 11), the compute vs communication split and the per-tag bytes
(Figures 10 and 3), kept bits per group (Figure 12), search time (Table 2), finetuning (Table 3).
"""

from __future__ import annotations

import json
from pathlib import Path

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
        base = {lk: runs.get(("exact-crypten", lk)) for lk in links}
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


def _speedup_plot(result, model, path):
    plt = _pyplot()
    runs = _runs_by(result, model)
    links = [lk["name"] for lk in result["links"]]
    configs = [c for c in dict.fromkeys(r["config"] for r in result["runs"] if r["model"] == model)]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / max(1, len(links))
    for j, lk in enumerate(links):
        base = runs.get(("exact-crypten", lk))
        vals = [base["seconds_online"] / runs[(c, lk)]["seconds_online"] if base and (c, lk) in runs else 0
                for c in configs]
        bars = ax.bar([i + j * width for i in range(len(configs))], vals, width, label=lk)
        ax.bar_label(bars, fmt="%.1f×", fontsize=7)
    ax.set_xticks([i + width * (len(links) - 1) / 2 for i in range(len(configs))], configs)
    ax.set_ylabel("online speedup over exact-crypten")
    ax.set_title(f"{model}: end-to-end speedup (Figures 7, 9)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _comm_rounds_plot(result, model, path):
    plt = _pyplot()
    runs = _runs_by(result, model)
    link = result["links"][0]["name"]
    configs = [c for c in dict.fromkeys(r["config"] for r in result["runs"] if r["model"] == model)]
    base = runs.get(("exact-crypten", link))
    if not base:
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = range(len(configs))
    b = [runs[(c, link)]["bytes_sent_per_party"] / base["bytes_sent_per_party"] for c in configs]
    r = [runs[(c, link)]["rounds"] / base["rounds"] for c in configs]
    ax.bar([x - 0.2 for x in xs], b, 0.4, label="bytes")
    ax.bar([x + 0.2 for x in xs], r, 0.4, label="rounds")
    ax.set_xticks(list(xs), configs)
    ax.set_ylabel("normalised to exact-crypten")
    ax.set_title(f"{model}: communication and rounds (Figure 11)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _breakdown_plot(result, model, path):
    plt = _pyplot()
    runs = [r for r in result["runs"] if r["model"] == model]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    labels = [f"{r['config']}\n{r['link']['name']}" for r in runs]
    comp = [r["seconds_compute"] for r in runs]
    comm = [r["seconds_communication"] for r in runs]
    ax1.bar(labels, comp, label="compute")
    ax1.bar(labels, comm, bottom=comp, label="communication")
    ax1.set_ylabel("online seconds")
    ax1.set_title("compute vs communication (Figure 10)")
    ax1.tick_params(axis="x", labelsize=6)
    ax1.legend()
    link = result["links"][0]["name"]
    sel = [r for r in runs if r["link"]["name"] == link]
    bottom = [0.0] * len(sel)
    for part in ("circuit", "mult", "b2a", "other"):
        vals = [r["breakdown_bytes"][part] / MB for r in sel]
        ax2.bar([r["config"] for r in sel], vals, bottom=bottom, label=part)
        bottom = [a + b for a, b in zip(bottom, vals)]
    ax2.set_ylabel("MB sent per server")
    ax2.set_title("bytes by protocol part (Figure 3)")
    ax2.tick_params(axis="x", labelsize=7)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


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


def write_report(results_path: str, out_dir: str, extra: list[str] = ()) -> Path:
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
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
