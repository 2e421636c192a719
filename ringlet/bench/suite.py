"""``ringlet bench suite``: every (model, configuration, link) on the same inputs, in one JSON.

A model name is a shipped checkpoint (``resnet20`` → ``models/resnet20-fmnist``) with its shipped
configurations (``models/resnet20-fmnist.eco.json``, ``.8-64.json``, ``.6-64.json``) and its dataset's
test images. Configurations:

  exact-crypten   Kogge-Stone word adder + B2A + Beaver multiplication + local truncation: the
                  costs of CrypTen 0.4.1 (1856 bits, 9 rounds per ReLU), the baseline of every ratio
  exact           ringlet's exact ReLU (carry tree + fused select with folded truncation)
  eco, 8/64, 6/64 the shipped search results (a config may name a finetuned checkpoint to use)
  eco-ring        eco's bits in the eco ring (``ring_bits`` in the config: ``search --mode eco-ring``)
  NAME-fss        configuration NAME with every ReLU by function secret sharing (one round each):
                  exact-fss, eco-fss, 8/64-fss are in the default set
  NAME-auto       configuration NAME with ``--relu-protocol auto`` for that run's link

Per run: accuracy, bytes, rounds, online time, images/s, the per-tag breakdown (Circuit / Mult /
B2A / Others, the paper's Figure 3), the compute vs communication split (Figure 10) and the analytic
projection compute + bytes/bandwidth + rounds × RTT.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ringlet.bench.netlink import can_use_namespaces, run_real_inference
from ringlet.bench.relu import breakdown
from ringlet.comm.shaper import profile
from ringlet.compiler.model import KeyMemoryError
from ringlet.jobs.infer import run_inference
from ringlet.protocols.catalog import relu_protocols
from ringlet.train.checkpoint import find_checkpoint, read_meta, shipped_models_dir

CONFIGS = ("exact-crypten", "exact", "eco", "8/64", "6/64", "exact-fss", "eco-fss", "8/64-fss")
BASE_CONFIGS = ("exact-crypten", "exact", "eco", "8/64", "6/64", "eco-ring")


def protocol_suffixes() -> dict[str, str]:
    """NAME-P: configuration NAME with every ReLU by protocol P (every registered ReLU protocol
    but the default, and auto)."""
    names = relu_protocols().names()
    return {f"-{p}": p for p in (*names[1:], "auto")}


def known_configs() -> tuple[str, ...]:
    return BASE_CONFIGS + tuple(b + sfx for sfx in protocol_suffixes() for b in BASE_CONFIGS
                                if b != "exact-crypten")


TIMEOUT = 900.0  # seconds a party waits for a message: the dealer's keys of a big fss batch take minutes


def shipped_stem(model: str) -> str:
    """``resnet20`` → the stem of its shipped checkpoint (``resnet20-fmnist``)."""
    if find_checkpoint(model):
        return model
    found = sorted(p.stem for p in shipped_models_dir().glob(f"{model}-*.json")
                   if find_checkpoint(p.stem) and p.stem.count(".") == 0)
    plain = [s for s in found if s.split("-", 1)[1] in ("fmnist", "cifar10", "mnist", "svhn", "cifar100")]
    if not (plain or found):
        raise ValueError(f"no shipped checkpoint for model {model!r} in {shipped_models_dir()}")
    return (plain or found)[0]


def config_setup(stem: str, name: str) -> dict:
    """Keyword arguments of :func:`run_inference` for a configuration name."""
    for suffix, protocol in protocol_suffixes().items():
        base = name[:-len(suffix)]
        if name.endswith(suffix) and base in BASE_CONFIGS and base != "exact-crypten":
            return {**config_setup(stem, base), "relu_protocol": protocol}
    if name == "exact-crypten":
        return {"adder": "kogge-stone", "select": "b2a-mult", "truncation": "local"}
    if name == "exact":
        return {}
    if name not in known_configs():
        raise ValueError(f"unknown configuration {name!r}; known: {', '.join(known_configs())}")
    path = shipped_models_dir() / f"{stem}.{name.replace('/', '-')}.json"
    if not path.is_file():
        raise ValueError(f"configuration {name} of {stem}: {path} not found (run ringlet search)")
    setup = {"relu_config": str(path)}
    ckpt = json.loads(path.read_text()).get("checkpoint")
    if ckpt and find_checkpoint(ckpt):
        setup["model"] = ckpt
    return setup


def _breakdown(by_tag: dict, samples: int) -> dict:
    out = {"circuit": 0, "mult": 0, "b2a": 0, "other": 0}
    tags = breakdown()
    for tag, row in by_tag.items():
        if tag in ("input", "output", "offline", "setup"):
            continue
        out[tags.get(tag, "other")] += row["bytes_sent"]
    return out


def _party_args(setup: dict) -> list[str]:
    args = []
    for key in ("relu_config", "adder", "select", "truncation", "linear_backend", "relu_protocol"):
        if setup.get(key):
            args += [f"--{key.replace('_', '-')}", str(setup[key])]
    return args


def run_one(stem: str, config: str, link_name: str, samples: int, batch: int, parties: int,
            rtt_ms: float | None, data_dir=None, progress=False, real: bool = False,
            linear_backend: str = "auto", relu_protocol: str | None = None) -> dict:
    setup = {**config_setup(stem, config), "linear_backend": linear_backend}
    if relu_protocol and "relu_protocol" not in setup and config != "exact-crypten":
        setup["relu_protocol"] = relu_protocol  # --relu-protocol: configs that name none
    model = setup.pop("model", stem)
    link = profile(link_name, rtt_ms if link_name == "wan-rtt" else None)
    try:
        report, _ = run_inference(model, samples=samples, batch=batch, parties=parties, link=link,
                                  progress=progress, data_dir=data_dir, timeout=TIMEOUT, **setup)
    except KeyMemoryError as exc:  # fss keys of a whole batch do not fit here: the batch that fits
        batch = exc.fits
        report, _ = run_inference(model, samples=samples, batch=batch, parties=parties, link=link,
                                  progress=progress, data_dir=data_dir, timeout=TIMEOUT, **setup)
    compute = report["seconds_online"] - report["seconds_communication"]
    real_s, real_error = None, None
    if real and parties == 2 and not link.rtt_s:
        if can_use_namespaces():
            path = find_checkpoint(model)
            assert path is not None  # run_inference above found it
            try:
                real_s = run_real_inference(str(path), link, samples, batch, _party_args(setup),
                                            dataset=read_meta(path).get("dataset"))["seconds_online"]
            except RuntimeError as exc:  # keep the shaped-transport figures; say why this one is absent
                real_error = str(exc)[-500:]
    return {
        "model": stem, "checkpoint": model, "config": config, "link": link.to_dict(), "batch": batch,
        "accuracy": report.get("accuracy"), "plaintext_accuracy": report.get("plaintext_accuracy"),
        "argmax_agreement": report["argmax_agreement"], "samples": report["samples"],
        "bytes_sent_per_party": report["bytes_sent_per_party"],
        "bytes_per_image": report["bytes_sent_per_image"], "rounds": report["rounds"],
        "seconds_online": report["seconds_online"], "images_per_second": report["images_per_second"],
        "seconds_compute": compute, "seconds_communication": report["seconds_communication"],
        "breakdown_bytes": _breakdown(report["by_tag"], samples),
        "projected_seconds": link.projected_seconds(
            compute, report["bytes_sent_per_party"],
            report["rounds"] * ((samples + batch - 1) // batch)),
        "kept_bits_fraction": report["kept_bits_fraction"], "relu_config": report["relu_config"],
        "relu_protocol": report.get("relu_protocol"), "relu_protocols": report.get("relu_protocols"),
        "offline_bytes_per_image": report["offline_bytes"] / report["samples"],
        "seconds_online_real_link": real_s,
        **({"real_link_error": real_error} if real_error else {}),
    }


def summarize(runs: list[dict], configs, model: str) -> dict:
    """comm_reduction_* (bytes) and wan_speedup_* (online time on wan) against both baselines, plus
    lan_/highbw_/wan_rtt_speedup_* for the links that were run."""
    pick = {(r["config"], r["link"]["name"]): r for r in runs if r["model"] == model}
    out = {}
    for base, suffix in (("exact-crypten", ""), ("exact", "_vs_exact")):
        for cfg in configs:
            if cfg in ("exact-crypten", base) or (base, "lan") not in pick and (base, "wan") not in pick:
                continue
            key = cfg.replace("/", "_")
            ref = pick.get((base, "wan")) or pick.get((base, "lan"))
            run = pick.get((cfg, "wan")) or pick.get((cfg, "lan"))
            if ref and run:
                out[f"comm_reduction{suffix}_{key}"] = ref["bytes_sent_per_party"] / run["bytes_sent_per_party"]
            if (base, "wan") in pick and (cfg, "wan") in pick:
                out[f"wan_speedup{suffix}_{key}"] = (pick[(base, "wan")]["seconds_online"] /
                                                     pick[(cfg, "wan")]["seconds_online"])
                out[f"rounds_ratio{suffix}_{key}"] = pick[(cfg, "wan")]["rounds"] / pick[(base, "wan")]["rounds"]
            for link in ("lan", "highbw", "wan-rtt"):  # reported without a target
                if (base, link) in pick and (cfg, link) in pick:
                    out[f"{link.replace('-', '_')}_speedup{suffix}_{key}"] = (
                        pick[(base, link)]["seconds_online"] / pick[(cfg, link)]["seconds_online"])
    return out


def run_suite(models, configs=CONFIGS, links=("lan", "wan"), samples: int = 64, batch: int = 32,
              parties: int = 2, rtt_ms: float | None = None, out: str | None = None, data_dir=None,
              progress: bool = False, log=print, command: str = "", real: bool = False,
              linear_backend: str = "auto", relu_protocol: str | None = None) -> dict:
    runs: list[dict[str, Any]] = []
    t0 = time.time()
    result: dict[str, Any] = {"command": command, "samples": samples, "batch": batch, "parties": parties,
              "linear_backend": linear_backend, "relu_protocol": relu_protocol,
              "links": [profile(lk, rtt_ms if lk == "wan-rtt" else None).to_dict() for lk in links],
              "runs": runs, "summary": {}, "searches": {}}
    for model in models:
        stem = shipped_stem(model)
        for config in configs:
            for link in links:
                row = run_one(stem, config, link, samples, batch, parties, rtt_ms, data_dir, progress,
                              real, linear_backend, relu_protocol)
                runs.append(row)
                if log:
                    log(f"{stem} {config:13s} {link:8s} acc {row['accuracy']:.4f} "
                        f"{row['bytes_sent_per_party'] / 1e6:9.1f} MB {row['rounds']:4d} rounds "
                        f"{row['seconds_online']:7.2f} s"
                        + (f" (real link {row['seconds_online_real_link']:.2f} s)"
                           if row["seconds_online_real_link"] else ""))
                if out:  # keep what is finished
                    Path(out).write_text(json.dumps(result, indent=1))
        result["summary"][stem] = summarize(runs, configs, stem)
        result["searches"][stem] = _search_reports(stem)
    if len(result["summary"]) == 1:  # one model: its summary keys also at the top level
        result.update(next(iter(result["summary"].values())))
    result["seconds"] = time.time() - t0
    if out:
        Path(out).write_text(json.dumps(result, indent=1))
    return result


def _search_reports(stem: str) -> dict:
    """The shipped search / finetune reports of a model (for the report's tables and plots)."""
    out = {}
    for path in sorted(shipped_models_dir().glob(f"{stem}.*.report.json")):
        try:
            out[path.name.split(".")[1]] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:  # a side table must not sink a finished suite
            out[path.name.split(".")[1]] = {"error": f"{path}: not JSON ({exc})"}
    return out
