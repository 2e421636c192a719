"""``run_inference``: the library call behind ``ringlet infer`` (models, inputs, launch, summary)."""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from torch import nn

from ringlet.data import load_dataset
from ringlet.nn.compiler import compile_model
from ringlet.nn.config import ReluConfig
from ringlet.nn.inference import client_program, server_program, summarize
from ringlet.nn.secure import CompiledModel, SecureOptions
from ringlet.ring import FixedPoint
from ringlet.train.api import find_checkpoint, resolve_model


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics from one forward pass over ``x`` (zoo models with
    random weights, so that activations have a realistic scale)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one pass gives the batch statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def load_inputs(model_meta: dict, dataset: str | None, samples: int | None, input_path: str | None,
                data_dir=None) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Images (float, normalised) and labels from a dataset's test split or an .npy file."""
    if input_path:
        arr = np.load(input_path, allow_pickle=False)
        if arr.dtype not in (np.float32, np.float64):
            raise ValueError(f"--input {input_path}: expected float32/float64, got {arr.dtype}")
        x = torch.from_numpy(arr).float()
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4:
            raise ValueError(f"--input {input_path}: expected N×C×H×W or C×H×W, got {tuple(arr.shape)}")
        if samples:
            x = x[:samples]
        return x, None, {"input": input_path}
    if dataset is None:
        ds_name = model_meta.get("dataset")
        if ds_name is None:
            raise ValueError("give --dataset or --input (the model has no dataset of its own)")
        dataset = ds_name
    test = load_dataset(dataset, "test", data_dir)
    x, y = test.tensors(samples)
    return x, y, {"dataset": dataset, "synthetic": test.synthetic}


def run_inference(model: str, *, dataset: str | None = None, samples: int | None = None,
                  input_path: str | None = None, relu_config: str | None = None, batch: int = 32,
                  parties: int = 2, transport: str = "local", private_weights: bool = False,
                  adder: str = "carry-tree", select: str = "fused", truncation: str | None = None,
                  pregenerate: bool = True, results_path: str | None = None, frac_bits: int = 16,
                  progress: bool = True, data_dir=None, threads: int = 0, timeout: float = 120.0,
                  seed: int = 0, link=None, poly_method: str = "espn",
                  poly_out_truncation: str = "dealer") -> tuple[dict, torch.Tensor]:
    """Private inference of a checkpoint or zoo model on a dataset or an .npy input."""
    from ringlet.launch import run_local
    meta = {}
    ckpt = find_checkpoint(model)
    if ckpt is not None:
        net, meta = resolve_model(model)
        x, labels, source = load_inputs(meta, dataset, samples, input_path, data_dir)
    else:
        x, labels, source = load_inputs({}, dataset, samples, input_path, data_dir)
        net, meta = resolve_model(model, tuple(x.shape[1:]), seed=seed)
        calibrate_batchnorm(net, x)
        meta["batchnorm_calibrated_on_input"] = True
    if tuple(meta["input_shape"]) != tuple(x.shape[1:]):
        raise ValueError(f"model {model} takes inputs of shape {tuple(meta['input_shape'])}, the "
                         f"inputs have shape {tuple(x.shape[1:])}")
    if batch < 1:
        raise ValueError(f"--batch must be positive, got {batch}")
    graph = compile_model(net, x.shape[1:])
    config = ReluConfig.load(relu_config) if relu_config else ReluConfig()
    bits = config.resolve(graph.activation_names, relu_config or "default config")
    options = SecureOptions(adder, select, truncation, private_weights=private_weights,
                            poly_method=poly_method, poly_out_truncation=poly_out_truncation)
    compiled = CompiledModel(graph, bits, options, FixedPoint(frac_bits))
    with torch.no_grad():
        plain = net(x).double()
        t0 = time.perf_counter()
        for start in range(0, x.shape[0], batch):  # the plaintext forward, batch by batch
            net(x[start:start + batch])
        plain_seconds = time.perf_counter() - t0
    server = functools.partial(server_program, model=compiled, pregenerate=pregenerate)
    client = functools.partial(client_program, images=x, batch=batch, results_path=results_path,
                               labels=labels, progress=progress)
    run = run_local(server, parties, client=client, transport=transport, timeout=timeout,
                    frac_bits=frac_bits, threads=threads, link=link)
    report = summarize(run, plain, labels, x.shape[0])
    relu_counts = graph.relu_elements()
    kept = sum(relu_counts[n] * (k - m) for n, (k, m) in bits.items())
    report.update({
        "model": model, "checkpoint": meta.get("checkpoint"), **source, "parties": parties,
        "transport": transport, "batch": batch, "private_weights": private_weights,
        "adder": adder, "select": select, "relu_config": relu_config,
        "relus_per_image": sum(relu_counts.values()),
        "kept_bits_fraction": kept / (64 * sum(relu_counts.values())) if relu_counts else None,
        "pregenerated": pregenerate,
        "link": link.to_dict() if link is not None else None,
        "plaintext_seconds": plain_seconds,
        "online_vs_plaintext": report["seconds_online"] / plain_seconds if plain_seconds else None,
    })
    return report, run.client_result["logits"]
