"""``ringlet infer`` as a library call: a model spec and data in, the report and the logits out."""

from __future__ import annotations

import torch

from ringlet import sources
from ringlet.compiler.config import as_config
from ringlet.compiler.options import SecureOptions


def run_inference(model: str, *, dataset: str | None = None, samples: int | None = None,
                  input_path: str | None = None, labels_path: str | None = None,
                  relu_config: str | None = None, batch: int = 32, parties: int = 2,
                  transport: str = "local", options: SecureOptions | None = None,
                  pregenerate: bool = True, results_path=None, frac_bits: int | None = None,
                  progress: bool = True, data_dir=None, threads: int = 0, timeout: float = 120.0,
                  seed: int = 0, link=None, weights: str | None = None,
                  normalize: str | None = None, image_size=None, smooth: str | None = None,
                  input_bound: float | None = None, ring_bits: int | None = None,
                  **overrides) -> tuple[dict, torch.Tensor]:
    """Private inference of a model spec (see :mod:`ringlet.sources`) on a dataset or .npy input.

    ``options`` (a :class:`~ringlet.compiler.options.SecureOptions`) and/or its keys as keywords
    (``adder``, ``relu_protocol``, ``linear_backend``, …): the protocols. ``results_path`` may be
    a callable, called only once the model and the data are ready (so that nothing is created when
    either is wrong).
    """
    options = (options or SecureOptions()).replace(**overrides)  # a bad option fails here
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
                   threads=threads, timeout=timeout, link=link, options=options)
    report = res.report
    report.update({"model": model, "checkpoint": src.meta.get("checkpoint"), **inputs.info,
                   "relu_config": relu_config, "results_path": path,
                   "batchnorm_calibrated_on": pm.meta.get("batchnorm_calibrated_on")})
    return report, res.logits
