"""PNG plots for reports (matplotlib, non-interactive backend)."""

from __future__ import annotations


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def kept_bits_plot(bits_per_group: dict, path: str, title: str = "") -> None:
    """Kept bits [m, k) of each ReLU group on the 64-bit share (the paper's Figure 12)."""
    plt = _pyplot()
    rows = []
    for group, settings in bits_per_group.items():
        for i, (k, m) in enumerate(settings):
            rows.append((group if len(settings) == 1 else f"{group}[{i}]", k, m))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    for y, (_name, k, m) in enumerate(rows):
        ax.barh(y, 64, left=0, color="#eeeeee", edgecolor="none")
        if k > m:
            ax.barh(y, k - m, left=m, color="#2a7ab9", edgecolor="none")
        ax.text(64.5, y, f"[{k}:{m}]", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 72)
    ax.set_xlabel("bit position in the 64-bit share (blue: kept)")
    ax.set_title(title or "kept bits per ReLU group")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
