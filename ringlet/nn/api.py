"""Private inference as library calls: ``private_inference`` runs a compiled model on inputs with
every party on this machine; ``run_inference`` is ``ringlet infer`` (a model spec and data in)."""

from __future__ import annotations

import functools
import time

import torch
from torch import nn

from ringlet.nn.inference import client_program, server_program, summarize


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics from one forward pass over ``x`` (zoo models with
    random weights, so that activations have a realistic scale). ``x`` must be public data."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one pass gives the batch statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def _kept_fraction(compiled, relu_counts: dict) -> float | None:
    """Bits the sign circuits read, as a fraction of 64 per ReLU (exact reads ℓ bits in Z_2^ℓ)."""
    if not relu_counts:
        return None
    ell = compiled.fixed.ring_bits
    kept = sum(relu_counts[n] * (min(k, ell) - m) for n, (k, m) in compiled.relu_bits.items()
               if n in relu_counts)
    return kept / (64 * sum(relu_counts.values()))


def private_inference(compiled, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                      parties: int = 2, transport: str = "local", batch: int = 32,
                      pregenerate: bool = True, results_path: str | None = None,
                      progress: bool = True, threads: int = 0, timeout: float = 120.0, link=None,
                      plain=None, seed=None) -> tuple[dict, torch.Tensor]:
    """Client, servers and dealer of one job; returns (the ``ringlet infer`` report, the logits).

    ``plain(x)`` gives the plaintext outputs (the comparison and the time baseline); default: the
    compiled graph in float64.
    """
    from ringlet.launch import run_local
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
        "relus_per_image": sum(relu_counts.values()),
        "kept_bits_fraction": _kept_fraction(compiled, relu_counts),
        "pregenerated": pregenerate, "fingerprint": fingerprint,
        "link": link.to_dict() if link is not None else None,
        "plaintext_seconds": plain_seconds,
        "online_vs_plaintext": report["seconds_online"] / plain_seconds if plain_seconds else None,
    })
    return report, run.client_result["logits"]


def run_inference(model: str, *, dataset: str | None = None, samples: int | None = None,
                  input_path: str | None = None, labels_path: str | None = None,
                  relu_config: str | None = None, batch: int = 32, parties: int = 2,
                  transport: str = "local", private_weights: bool = False,
                  adder: str = "carry-tree", select: str = "fused", truncation: str | None = None,
                  pregenerate: bool = True, results_path=None, frac_bits: int | None = None,
                  progress: bool = True, data_dir=None, threads: int = 0, timeout: float = 120.0,
                  seed: int = 0, link=None, poly_method: str = "espn",
                  poly_out_truncation: str = "dealer", linear_backend: str = "auto",
                  weights: str | None = None,
                  normalize: str | None = None, image_size=None, smooth: str | None = None,
                  input_bound: float | None = None, ring_bits: int | None = None,
                  relu_protocol: str | None = None, auto_link: str | None = None) -> tuple[dict, torch.Tensor]:
    """Private inference of a model spec (see :mod:`ringlet.sources`) on a dataset or .npy input.

    ``results_path`` may be a callable, called only once the model and the data are ready (so
    that nothing is created when either is wrong).
    """
    from ringlet import sources
    from ringlet.private import as_config
    if samples is not None and samples < 1:
        raise ValueError(f"--samples must be at least 1, got {samples}")
    if batch < 1:
        raise ValueError(f"--batch must be positive, got {batch}")
    if timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {timeout}")
    config = as_config(relu_config)  # a bad file fails before anything runs
    pm, src, inputs = sources.prepare(model, weights=weights, dataset=dataset, samples=samples,
                                      input_path=input_path, labels_path=labels_path,
                                      data_dir=data_dir, normalize=normalize, image_size=image_size,
                                      seed=seed, frac_bits=frac_bits, smooth=smooth,
                                      input_bound=input_bound, ring_bits=ring_bits)
    path = results_path() if callable(results_path) else results_path
    res = pm.infer(inputs.x, config if relu_config else None, parties, transport, labels=inputs.y,
                   batch=batch, pregenerate=pregenerate, results_path=path, progress=progress,
                   threads=threads, timeout=timeout, link=link, private_weights=private_weights,
                   adder=adder, select=select, truncation=truncation, poly_method=poly_method,
                   poly_out_truncation=poly_out_truncation, backend=linear_backend,
                   relu_protocol=relu_protocol, auto_link=auto_link)
    report = res.report
    report.update({"model": model, "checkpoint": src.meta.get("checkpoint"), **inputs.info,
                   "relu_config": relu_config, "results_path": path,
                   "batchnorm_calibrated_on": pm.meta.get("batchnorm_calibrated_on")})
    return report, res.logits
