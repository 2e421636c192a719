"""Private inference end to end: the client's and the servers' programs, batching, results.

Set-up of a job (tag ``setup``, never counted as online traffic):

1. the servers send each other a fingerprint of what they will run (graph, weights, activation
   bits, protocol options, fixed point, input range) and stop with an error naming the server and
   the part that differs on any mismatch — before any share is exchanged;
2. the client tells every server the number of inputs, the batch size and the input shape; server 0
   answers with the output scale and shape, the input's fractional bits, the input range, the
   post-processing the client applies (a stripped softmax) and the fingerprint;
3. the client checks its fixed point against the servers', and every input element against the
   range (an input outside it would wrap in the ring and give a wrong answer); it then tells the
   servers to go, or to stop with the reason, and raises.

Then, per batch: the client secret-shares the batch, the servers run the compiled model on shares,
and the logits are revealed to the client only. With ``pregenerate`` the servers first record the
batch shape's dealer plan (a run on a zero input owned by server 0, which needs no client) and fetch
all material before each online batch, so the online time excludes the dealer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TypeVar

import torch
from tqdm import tqdm

from ringlet.comm.base import CommStats
from ringlet.compiler.graph import apply_postprocess
from ringlet.compiler.model import CompiledModel
from ringlet.compiler.ranges import InputRange, InputRangeError, check_input
from ringlet.protocols.io import reveal, share_input
from ringlet.session import Session


class ModelMismatchError(ValueError):
    """The parties of a job do not run the same model (or fixed point, or options)."""


SERVER_TAGS_EXCLUDED = ("offline", "setup", "input", "output")


def _send_ints(sess: Session, dst: int, values) -> None:
    sess.comm.send(dst, [("setup", torch.tensor(list(values), dtype=torch.int64))], "job")


def _recv_ints(sess: Session, src: int) -> list[int]:
    (t,) = sess.comm.recv(src, "job")
    return t.tolist()


def _send_json(sess: Session, dst: int, obj) -> None:
    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
    sess.comm.send(dst, [("setup", data)], "job")


def _recv_json(sess: Session, src: int):
    (t,) = sess.comm.recv(src, "job")
    return json.loads(bytes(t.tolist()).decode())


def agree_on_model(sess: Session, model: CompiledModel) -> dict:
    """Exchange fingerprints among the servers; a mismatch is an error naming what differs."""
    mine = model.fingerprint()
    peers = [s for s in sess.world.servers if s != sess.rank]
    for s in peers:
        _send_json(sess, s, mine)
    for s in peers:
        theirs = _recv_json(sess, s)
        differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if differ:
            parts = "; ".join(f"{k}: {str(mine.get(k))[:16]} here, {str(theirs.get(k))[:16]} on server {s}"
                              for k in differ)
            raise ModelMismatchError(f"server {sess.rank}: server {s} runs a different model — "
                                     f"{', '.join(differ)} differ ({parts})")
    return mine


def server_program(sess: Session, model: CompiledModel, pregenerate: bool = True,
                   layer_log: bool = True) -> dict:
    """Serve one job from the client; returns this server's counts and per-layer log."""
    client = sess.world.client
    if sess.fixed != model.fixed:
        raise ModelMismatchError(
            f"server {sess.rank}: the session encodes with {sess.fixed.frac_bits} fractional bits in a "
            f"{sess.fixed.ring_bits}-bit ring, the model was compiled for {model.fixed.frac_bits} "
            f"in a {model.fixed.ring_bits}-bit ring")
    fingerprint = agree_on_model(sess, model)
    if client is None:
        raise ValueError(f"server {sess.rank}: a job is served to a client, and this world has none")
    n, batch, *shape = _recv_ints(sess, client)
    if tuple(shape) != tuple(model.graph.input_shape):
        raise ValueError(f"server {sess.rank}: the client sends inputs of shape {tuple(shape)}, the "
                         f"model takes {tuple(model.graph.input_shape)}")
    out_shape = model.graph.output_shape
    if sess.rank == 0:
        _send_json(sess, client, {
            "output_frac": model.output_frac, "output_shape": list(out_shape),
            "input_frac": model.fixed.frac_bits, "ring_bits": model.fixed.ring_bits,
            "input_range": model.input_range.to_dict(),
            "postprocess": model.graph.postprocess, "fingerprint": fingerprint})
    go = _recv_json(sess, client)
    if not go.get("go"):
        return {"aborted": go.get("reason", "the client stopped the job"), "online": CommStats(),
                "offline": CommStats(), "seconds_online": 0.0, "seconds_offline": 0.0,
                "per_layer": [], "batch_rounds": [0]}
    weights = model.share_weights(sess) if model.options.private_weights else None
    plans: dict[tuple, list] = {}
    online, offline = CommStats(), CommStats()
    seconds_online = seconds_offline = seconds_plan = 0.0
    layers: dict[str, dict] = {}
    batch_rounds = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        bshape = (size, *shape)
        if pregenerate:
            before, t0 = sess.stats.copy(), time.perf_counter()
            if bshape not in plans:
                plans[bshape] = model.record_plan(sess, bshape, weights)
                seconds_plan += time.perf_counter() - t0
            link = sess.offline
            if link is None:  # record_plan above has refused a party without a dealer link
                raise RuntimeError(f"server_program runs on servers only, not on the {sess.role}")
            t1 = time.perf_counter()
            link.pregenerate(plans[bshape])
            seconds_offline += time.perf_counter() - t1
            offline = _add(offline, sess.stats.minus(before))
            # the servers finish their offline work at different times (only the last holder
            # receives corrections): start the online clock together
            sess.barrier(among=sess.world.servers)
        model.linear_backends(size)  # measured (or read from the cache) before the clock starts
        log: list[dict] | None = [] if layer_log else None
        before, t0 = sess.stats.copy(), time.perf_counter()
        x = share_input(sess, None, client, bshape)
        if x is None:  # share_input gives every server its share of the client's input
            raise RuntimeError(f"server_program runs on servers only, not on the {sess.role}")
        y = model.run(sess, x, weights, log)
        reveal(sess, y, to=client)
        seconds_online += time.perf_counter() - t0
        used = sess.stats.minus(before)
        batch_rounds.append(used.total_rounds(exclude=SERVER_TAGS_EXCLUDED))
        online = _add(online, used)
        if log and len(batch_rounds) > 1:  # the first batch warms up: not a drift
            model.check_backend_drift(size, log)
        for row in log or []:
            acc = layers.setdefault(row["name"], {**row, "bytes_sent": 0, "rounds": 0, "seconds": 0.0,
                                                  "drelus": 0, "by_tag": {}})
            for key in ("bytes_sent", "rounds", "seconds", "drelus"):
                acc[key] += row[key]
            for tag, v in row["by_tag"].items():
                acc["by_tag"][tag] = acc["by_tag"].get(tag, 0) + v
    return {"online": online, "offline": offline, "seconds_online": seconds_online,
            "seconds_offline": seconds_offline, "seconds_plan": seconds_plan, "per_layer": list(layers.values()),
            "batch_rounds": batch_rounds}


def _add(a: CommStats, b: CommStats) -> CommStats:
    out = a.copy()
    _add_counts(out.sent, b.sent)
    _add_counts(out.received, b.received)
    _add_counts(out.rounds, b.rounds)
    out.messages += b.messages
    out.framing_bytes += b.framing_bytes
    out.seconds_waiting += b.seconds_waiting
    return out


_Key = TypeVar("_Key")


def _add_counts(dst: dict[_Key, int], src: dict[_Key, int]) -> None:
    """Add ``src``'s counts into ``dst`` (a defaultdict(int), as in a :class:`CommStats`)."""
    for k, v in src.items():
        dst[k] += v


def _check_job(sess: Session, images: torch.Tensor, reply: dict, fingerprint: dict | None) -> None:
    """The client's checks before any share leaves it (see the module docstring)."""
    if reply["input_frac"] != sess.fixed.frac_bits:
        raise ModelMismatchError(f"client: the servers encode inputs with {reply['input_frac']} "
                                 f"fractional bits, this client with {sess.fixed.frac_bits}")
    if reply.get("ring_bits", 64) != sess.fixed.ring_bits:
        raise ModelMismatchError(f"client: the servers compute in a {reply.get('ring_bits', 64)}-bit "
                                 f"ring, this client in a {sess.fixed.ring_bits}-bit one (--ring-bits)")
    if fingerprint is not None and reply["fingerprint"] != fingerprint:
        differ = [k for k in fingerprint if reply["fingerprint"].get(k) != fingerprint[k]]
        raise ModelMismatchError(f"client: the servers run another model than expected "
                                 f"({', '.join(differ)} differ)")
    check_input(images, InputRange.from_dict(reply["input_range"]))


def client_program(sess: Session, images: torch.Tensor, batch: int,
                   results_path: str | None = None, labels: torch.Tensor | None = None,
                   progress: bool = True, fingerprint: dict | None = None) -> dict:
    """Secret-share ``images`` batch by batch and receive the logits; nothing else leaves the client.

    ``fingerprint``: what the client expects the servers to run (refused otherwise). The logits
    returned are the model's outputs: a stripped softmax is applied here, by the client.
    """
    n = images.shape[0]
    shape = tuple(images.shape[1:])
    for s in sess.world.servers:
        _send_ints(sess, s, [n, batch, *shape])
    reply = _recv_json(sess, 0)
    try:
        _check_job(sess, images, reply, fingerprint)
    except (ModelMismatchError, InputRangeError) as exc:
        # the servers learn that the job stops and why in general — never an input's value
        reason = ("an input is outside the model's range" if isinstance(exc, InputRangeError)
                  else "the client expects another model or fixed point")
        for s in sess.world.servers:
            _send_json(sess, s, {"go": False, "reason": f"client: {reason}"})
        raise
    for s in sess.world.servers:
        _send_json(sess, s, {"go": True})
    out_frac, out_shape = reply["output_frac"], reply["output_shape"]
    logits = []
    stream = open(results_path, "w") if results_path else None
    bar = tqdm(total=n, desc="private inference", unit="img", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch):
            x = images[start:start + batch]
            share_input(sess, x, sess.rank, tuple(x.shape))
            raw = reveal(sess, None, to=sess.rank, decode=False, shape=(x.shape[0], *out_shape))
            if raw is None:  # reveal returns the value on the party it is revealed to: this one
                raise RuntimeError("client: the servers revealed no logits to the client")
            y = raw.to(torch.float64) / (1 << out_frac)
            logits.append(y)
            if stream:
                row = {"first": start, "count": int(x.shape[0]), "predictions": y.argmax(1).tolist(),
                       "logits": y.tolist()}
                if labels is not None:
                    row["labels"] = labels[start:start + x.shape[0]].tolist()
                stream.write(json.dumps(row) + "\n")
                stream.flush()
            bar.update(x.shape[0])
            sent = sess.stats.bytes_sent() + sess.stats.bytes_received()
            bar.set_postfix(img_s=f"{(start + x.shape[0]) / (time.perf_counter() - t0):.1f}",
                            client_MB=f"{sent / 1e6:.1f}", refresh=False)
    finally:
        bar.close()
        if stream:
            stream.close()
    post = reply["postprocess"]
    return {"logits": apply_postprocess(post, torch.cat(logits).reshape(n, *out_shape)),
            "postprocess": post}


def summarize(run, plain_logits: torch.Tensor, labels: torch.Tensor | None, n: int) -> dict:
    """The ``ringlet infer`` JSON from a finished run and the plaintext logits."""
    servers = [r.result for r in run.servers]
    client = run.reports[run.world.client]
    logits = run.client_result["logits"].reshape(plain_logits.shape)
    pred, plain_pred = logits.argmax(1), plain_logits.argmax(1)
    seconds_online = max(s["seconds_online"] for s in servers)
    per_layer = []
    for rows in zip(*(s["per_layer"] for s in servers)):
        per_layer.append({**rows[0], "bytes_sent": max(r["bytes_sent"] for r in rows),
                          "rounds": max(r["rounds"] for r in rows),
                          "seconds": max(r["seconds"] for r in rows)})
    by_tag: dict[str, dict] = {}
    for s in servers:
        for tag, row in s["online"].by_tag().items():
            cur = by_tag.setdefault(tag, {"bytes_sent": 0, "rounds": 0})
            cur["bytes_sent"] = max(cur["bytes_sent"], row["bytes_sent"])
            cur["rounds"] = max(cur["rounds"], row["rounds"])
    out = {
        "samples": n,
        "argmax_agreement": float((pred == plain_pred).double().mean()),
        "max_abs_logit_error": float((logits - plain_logits).abs().max()),
        "bytes_sent_per_party": max(s["online"].bytes_sent(exclude=SERVER_TAGS_EXCLUDED) for s in servers),
        "bytes_sent_per_image": max(s["online"].bytes_sent(exclude=SERVER_TAGS_EXCLUDED)
                                    for s in servers) / n,
        "rounds": max(max(s["batch_rounds"]) for s in servers),  # one pass through the model
        "rounds_total": max(s["online"].total_rounds(exclude=SERVER_TAGS_EXCLUDED) for s in servers),
        "input_bytes": client.online.bytes_sent(tags=("input",)),
        "output_bytes": sum(s["online"].bytes_sent(tags=("output",)) for s in servers),
        "offline_bytes": sum(s["offline"].bytes_received(tags=("offline",)) +
                             s["online"].bytes_received(tags=("offline",)) for s in servers),
        "seconds_online": seconds_online,
        "seconds_communication": max(s["online"].seconds_waiting for s in servers),
        "seconds_offline": max(s["seconds_offline"] for s in servers),
        "seconds_plan": max(s.get("seconds_plan", 0.0) for s in servers),
        "images_per_second": n / seconds_online if seconds_online else None,
        "by_tag": by_tag,
        "peak_rss_mb": {run.world.role(r) + str(r): rep.peak_rss_mb for r, rep in run.reports.items()},
        # TLS records and handshakes on each party's links, apart from the payload counts above
        "tls_overhead_bytes": {run.world.role(r) + str(r): rep.tls_overhead_bytes
                               for r, rep in run.reports.items()},
        "per_layer": per_layer,
        "by_kind": by_kind(per_layer),
    }
    if labels is not None:
        out["accuracy"] = float((pred == labels).double().mean())
        out["plaintext_accuracy"] = float((plain_pred == labels).double().mean())
    return out


def by_kind(per_layer: list[dict]) -> dict[str, dict]:
    """Bytes, rounds and seconds of the online phase per node kind (softmax, layernorm, matmul,
    smooth — GELU and the like —, relu, conv, ...), with each kind's share of the bytes and of the
    time the nodes took (a node's input truncation counts to it)."""
    kinds: dict[str, dict] = {}
    for row in per_layer:
        k = kinds.setdefault(row["kind"], {"nodes": 0, "bytes_sent": 0, "rounds": 0, "seconds": 0.0})
        k["nodes"] += 1
        k["bytes_sent"] += row["bytes_sent"]
        k["rounds"] += row["rounds"]
        k["seconds"] += row["seconds"]
    total_bytes = sum(k["bytes_sent"] for k in kinds.values()) or 1
    total_seconds = sum(k["seconds"] for k in kinds.values()) or 1.0
    for k in kinds.values():
        k["bytes_share"] = k["bytes_sent"] / total_bytes
        k["time_share"] = k["seconds"] / total_seconds
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1]["bytes_sent"]))


def save_logits(path: str | Path, logits: torch.Tensor) -> None:
    import numpy as np
    np.save(path, logits.numpy())
