"""Private inference as a library call: ``private_inference`` runs a compiled model on inputs with
every party on this machine (a model spec and data in: :func:`ringlet.jobs.infer.run_inference`)."""

from __future__ import annotations

import functools
import time

import torch

from ringlet.runtime.launch import party_threads, run_local
from ringlet.runtime.programs import client_program, server_program, summarize


def _kept_fraction(compiled, relu_counts: dict) -> float | None:
    """Bits the sign circuits read, as a fraction of 64 per ReLU (exact reads ℓ bits in Z_2^ℓ)."""
    if not relu_counts:
        return None
    ell = compiled.fixed.ring_bits
    kept = sum(relu_counts[n] * (min(k, ell) - m) for n, (k, m) in compiled.relu_bits.items()
               if n in relu_counts)
    return kept / (64 * sum(relu_counts.values()))


def _measure_backends(compiled, n: int, batch: int, transport: str, parties: int, threads: int) -> None:
    """``auto``'s linear backends measured here, before any party links, at the thread count each
    server will run with (the on-disk cache is keyed by it): nothing else runs meanwhile, and a
    cold cache on a large model cannot outlast the parties' waits for each other."""
    if compiled.options.backend != "auto":
        return
    sizes = {min(batch, n)} | ({n % batch} if n > batch and n % batch else set())
    threads = party_threads(threads, transport, parties)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for size in sizes:
            compiled.linear_backends(size)
    finally:
        torch.set_num_threads(old)


def private_inference(compiled, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                      parties: int = 2, transport: str = "local", batch: int = 32,
                      pregenerate: bool = True, results_path: str | None = None,
                      progress: bool = True, threads: int = 0, timeout: float = 120.0, link=None,
                      plain=None, seed=None) -> tuple[dict, torch.Tensor]:
    """Client, servers and dealer of one job; returns (the ``ringlet infer`` report, the logits).

    ``plain(x)`` gives the plaintext outputs (the comparison and the time baseline); default: the
    compiled graph in float64.
    """
    if batch < 1:
        raise ValueError(f"--batch must be positive, got {batch}")
    if timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {timeout}")
    if plain is None:
        def plain(t):
            return compiled.graph.finish(compiled.run_plain(t))
    with torch.no_grad():
        reference = plain(x).double()  # also the warm-up of the timed passes below
        passes = []
        for _ in range(3):  # the plaintext forward, batch by batch: the median of three passes
            t0 = time.perf_counter()
            for start in range(0, x.shape[0], batch):
                plain(x[start:start + batch])
            passes.append(time.perf_counter() - t0)
        plain_seconds = sorted(passes)[1]
    protocols = compiled.protocols_for(batch, parties)  # auto decides, and fss refuses p > 2, here
    if pregenerate:  # every party runs on this machine: the keys of a batch must fit beside each other
        compiled.check_key_memory(min(batch, x.shape[0]), protocols, parties)
    _measure_backends(compiled, x.shape[0], batch, transport, parties, threads)
    fingerprint = compiled.fingerprint()
    server = functools.partial(server_program, model=compiled, pregenerate=pregenerate)
    client = functools.partial(client_program, images=x, batch=batch, results_path=results_path,
                               labels=labels, progress=progress, fingerprint=fingerprint)
    run = run_local(server, parties, client=client, transport=transport, timeout=timeout,
                    frac_bits=compiled.fixed.frac_bits, ring_bits=compiled.fixed.ring_bits,
                    threads=threads, link=link)
    report = summarize(run, reference, labels, x.shape[0])
    relu_counts = compiled.graph.relu_elements()
    o = compiled.options
    report.update({
        "parties": parties, "transport": transport, "batch": batch,
        "private_weights": o.private_weights, "adder": o.adder, "select": o.select,
        "linear_backend": o.backend, "relu_protocol": o.relu_protocol,
        "relu_protocols": protocols,
        "frac_bits": compiled.fixed.frac_bits, "ring_bits": compiled.fixed.ring_bits,
        "postprocess": compiled.graph.postprocess,
        "relus_per_image": compiled.graph.relus_per_image(),
        "comparisons_per_image": compiled.graph.comparisons_per_image(compiled.relu_bits),
        "kept_bits_fraction": _kept_fraction(compiled, relu_counts),
        "pregenerated": pregenerate, "fingerprint": fingerprint,
        "link": link.to_dict() if link is not None else None,
        "plaintext_seconds": plain_seconds,
        "online_vs_plaintext": report["seconds_online"] / plain_seconds if plain_seconds else None,
    })
    return report, run.client_result["logits"]
