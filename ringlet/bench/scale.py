"""``ringlet bench scale``: online time, bytes and memory against batch size and number of servers.

Every party runs as its own process (TCP on loopback) so that each one's peak memory is its own.
The memory per image is fitted as a line over the batch sizes; the report states the batch at which
the parties together would exhaust this machine's memory.
"""

from __future__ import annotations

import os

from ringlet.bench.suite import shipped_stem
from ringlet.jobs.infer import run_inference


def machine_memory_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 20


def _fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
    return my - slope * mx, slope


def run_scale(model: str, batches=(1, 2, 4, 8, 16, 32, 64), servers=(2, 3, 4), fixed_batch: int = 8,
              transport: str = "tcp", log=None, command: str = "") -> dict:
    stem = shipped_stem(model)
    rows = []
    for parties, batch in [(2, b) for b in batches] + [(p, fixed_batch) for p in servers if p != 2 or
                                                           fixed_batch not in batches]:
        rep, _ = run_inference(stem, samples=batch, batch=batch, parties=parties, transport=transport,
                               progress=False)
        mem = rep["peak_rss_mb"]
        row = {"parties": parties, "batch": batch, "seconds_online": rep["seconds_online"],
               "bytes_sent_per_party": rep["bytes_sent_per_party"], "rounds": rep["rounds"],
               "images_per_second": rep["images_per_second"],
               "peak_rss_mb_max_party": max(mem.values()), "peak_rss_mb_all": sum(mem.values())}
        rows.append(row)
        if log:
            log(f"{stem} p={parties} batch={batch}: {row['seconds_online']:.2f} s, "
                f"{row['bytes_sent_per_party'] / 1e6:.1f} MB, peak {row['peak_rss_mb_all']:.0f} MB in all")
    two = [r for r in rows if r["parties"] == 2]
    base, per_image = _fit([r["batch"] for r in two], [r["peak_rss_mb_all"] for r in two])
    total = machine_memory_mb()
    return {"command": command, "model": stem, "rows": rows, "transport": transport,
            "memory_mb_fixed": base, "memory_mb_per_image": per_image, "machine_memory_mb": total,
            "max_batch_in_memory": int((total - base) / per_image) if per_image > 0 else None}
