"""``ringlet bench serve``: a whole ``ringlet serve`` deployment on loopback under concurrent clients.

What is measured, in one command:

* a deployment (server 0, server 1, the dealer: three ``ringlet serve`` processes, TLS 1.3 unless
  ``tls=False``, one torch thread per server) is written into a temporary folder and started;
* ``clients`` threads, each with its own :class:`~ringlet.serve.client.Client`, send ``queries``
  queries of ``rows`` inputs each, at most ``window`` in flight per client. Per query: the latency
  from ``submit`` to the reconstructed result, or the error kind, or *lost* (neither within the
  deployment's query timeout + 5 s, the client's own wait);
* every answer is compared with the plaintext logits of the same compiled model (compiled again
  in this process with the servers' arguments and checked against their fingerprint; float64):
  *wrong* = another argmax or a logit off by more than :data:`LOGIT_TOLERANCE`;
* server pool depths are sampled every 0.5 s, and server 0's ``ringlet_batch_size`` histogram
  (its /metrics) gives the mean rows per evaluated batch;
* after the deployment is stopped (never two heavy jobs at once), the one-shot online throughput of
  the same compiled model at batch ``max_batch`` over the same transport
  (:func:`ringlet.runtime.inference.private_inference`): ``throughput_ratio`` is serving over one-shot.

Inputs: the first ``clients × queries × rows`` test images of the model's dataset, else N(0, 1)
inputs clipped to ±input_bound (public benchmark inputs, never secrets).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ringlet import deploy, sources
from ringlet.bench.hostile import run_hostile
from ringlet.bench.load import run_client, score
from ringlet.comm.base import CommError
from ringlet.comm.certs import make_dev_certs
from ringlet.comm.transport import free_port
from ringlet.runtime.inference import private_inference
from ringlet.serve.client import Client
from ringlet.serve.server import load_model

READY_TIMEOUT = 600.0  # seconds for the servers to compile, link up and fill their pools
ROLES = ("server-0", "server-1", "dealer")


def _absolute(path):
    return str(Path(path).resolve()) if path else None


def write_deployment(folder: Path, model: str, *, weights=None, input_shape=None, relu_config=None,
                     relu_protocol=None, dataset=None, data_dir=None, input_bound=None,
                     max_batch: int = 32, max_wait_ms: float = 10.0, sizes=(1, 8, 32),
                     pool_depth: int = 2, tls: bool = True, clients=("client",),
                     in_flight: int = 64, links: int = 16) -> Path:
    """A deployment file on free loopback ports (server 0 also serves /metrics), with dev certs."""
    is_file = Path(model).exists() or Path(model + ".safetensors").exists()  # a path or a stem
    section = {"source": _absolute(model) if is_file else model, "weights": _absolute(weights),
               "input_shape": [int(v) for v in input_shape] if input_shape else None,
               "relu_config": _absolute(relu_config), "relu_protocol": relu_protocol,
               "dataset": dataset, "data_dir": _absolute(data_dir),
               "input_bound": float(input_bound) if input_bound is not None else None}
    raw: dict[str, Any] = {"version": 1, "name": f"bench-serve-{os.getpid()}",
           "tls": {"enabled": bool(tls), "folder": "certs"},
           "parties": {"server-0": {"address": f"127.0.0.1:{free_port()}",
                                    "metrics": f"127.0.0.1:{free_port()}"},
                       "server-1": {"address": f"127.0.0.1:{free_port()}"},
                       "dealer": {}, **{name: {} for name in clients}},
           "model": {k: v for k, v in section.items() if v is not None},
           "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "sizes": list(sizes)},
           "pool": {"depth": pool_depth},
           # every bench client thread holds the one certificate "client"
           "limits": {"in_flight": in_flight, "links": links}}
    path = deploy.write(Path(folder) / "deploy.json", raw)
    if tls:
        make_dev_certs(Path(folder) / "certs", list(raw["parties"]))
    return path


def bench_inputs(compiled, model: str, n: int, *, weights=None, dataset=None, data_dir=None,
                 input_bound=None, seed: int = 0) -> torch.Tensor:
    """``n`` model inputs: the dataset's first test images, else clipped N(0, 1) inputs."""
    shape = tuple(compiled.graph.input_shape)
    meta = sources.resolve_model(model, weights=weights, input_shape=shape).meta
    name = dataset or meta.get("dataset")
    if name:
        x = sources.load_inputs(meta, dataset=name, samples=n, data_dir=data_dir).x
        if x.shape[0] < n:
            raise ValueError(f"dataset {name} has {x.shape[0]} test images; the benchmark needs "
                             f"{n} (clients × queries × rows)")
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"dataset {name} has inputs of shape {tuple(x.shape[1:])}, the model "
                             f"takes {shape}")
        return x[:n]
    bound = float(input_bound if input_bound is not None else compiled.input_range.bound)
    rng = np.random.default_rng(seed)  # not secret: public benchmark inputs, not a client's data
    return torch.from_numpy(rng.standard_normal((n, *shape)).clip(-bound, bound)).float()


def _tails(folder: Path, lines: int = 25) -> str:
    out = []
    for log in (folder / f"{name}.log" for name in ROLES):
        if log.exists():
            out += [f"--- {log.stem} log", *log.read_text(errors="replace").splitlines()[-lines:]]
    return "\n".join(out)


def start_party(path: Path, folder: Path, name: str, dealer_nice: int = 10) -> subprocess.Popen:
    """One party of the deployment as a ``ringlet serve`` process (its log in ``folder``)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
    # on one host the dealer yields the cores to the online phase (it fills pools meanwhile)
    role = (["dealer", "--nice", str(dealer_nice)] if name == "dealer"
            else ["server", "--rank", name.split("-")[1]])
    cmd = [sys.executable, "-m", "ringlet.cli.main", "serve", "--deploy", str(path),
           "--threads", "1", "--role", *role]
    with open(folder / f"{name}.log", "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_deployment(path: Path, folder: Path, dealer_nice: int = 10) -> dict:
    """Server 0, server 1 and the dealer as ``ringlet serve`` processes (logs in ``folder``)."""
    return {name: start_party(path, folder, name, dealer_nice) for name in ROLES}


def wait_ready(d, procs: dict, folder: Path, timeout: float = READY_TIMEOUT, pool: bool = True) -> None:
    """Until every server serves with a full pool; a party that exits, or the timeout, is an error
    showing the tail of every log. ``d``: a deployment with a short connect timeout (each status
    call then returns soon enough to notice a party that exited)."""
    deadline, client = time.monotonic() + timeout, Client(d)
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode} before the deployment "
                                   f"was ready\n{_tails(folder)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the deployment is not ready after {timeout:g} s\n{_tails(folder)}")
        try:
            return client.wait_ready(min(2.0, max(0.1, deadline - time.monotonic())),
                                     pool=d.pool_depth if pool else False)
        except TimeoutError:
            pass  # not yet: check the processes again


def stop_deployment(procs: dict, grace: float = 10.0) -> None:
    """SIGTERM (the servers drain), then SIGKILL whatever still runs after ``grace`` seconds."""
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sample_pools(d, t_start: float, stop: threading.Event, out: list, every: float = 0.5) -> None:
    """Every ``every`` s until ``stop``: {"t", "server-0": {shape: depth}, "server-1": …} to ``out``."""
    client = Client(d)
    while True:
        try:
            st = client.status()
            out.append({"t": round(time.perf_counter() - t_start, 3),
                        **{f"server-{s['server']}": s.get("pool", {}) for s in st},
                        "pool_mb": {f"server-{s['server']}": round(s.get("pool_bytes", 0) / 1e6, 1)
                                    for s in st}})
        except (CommError, OSError):
            pass  # a sample missed; the next one may work
        if stop.wait(every):
            return


def mean_batch(d) -> float | None:
    """Rows per evaluated batch from server 0's ``ringlet_batch_size`` histogram (sum / count)."""
    import urllib.request
    host, port = d.server(0).metrics
    try:
        text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    except OSError:
        return None  # no metrics endpoint answered: the mean batch is unknown
    found = dict(re.findall(r"^ringlet_batch_size_(sum|count)(?:\{[^}]*\})? (\S+)$", text, re.M))
    count = float(found.get("count", 0))
    return float(found["sum"]) / count if count else None


def _check_args(clients, queries, rows, max_batch, sizes, pool_depth, window) -> None:
    flags = {"--clients": clients, "--queries": queries, "--rows": rows, "--max-batch": max_batch,
             "--pool-depth": pool_depth, "--window": window}
    bad = [f"{flag} must be at least 1, got {v}" for flag, v in flags.items() if v < 1]
    if bad:
        raise ValueError("; ".join(bad))
    if rows > max_batch:
        raise ValueError(f"--rows {rows}: a query holds at most --max-batch {max_batch} rows")
    if any(not 1 <= s <= max_batch for s in sizes):
        raise ValueError(f"--sizes {','.join(map(str, sizes))}: batch shapes lie in "
                         f"1..--max-batch {max_batch}")


def run_load(d, quick, per_client: list, window: int, folder: Path, progress=None) -> tuple[list, list]:
    """Every client in its own thread, and the pool sampler; (query records, pool samples)."""
    from tqdm import tqdm
    records: list[list[dict[str, Any]]] = [[] for _ in per_client]
    failures: list[str] = []
    pools: list[dict[str, Any]] = []
    stop = threading.Event()
    bar = tqdm(total=sum(map(len, per_client)), desc="queries", unit="query", file=sys.stderr,
               disable=not (sys.stderr.isatty() if progress is None else progress))
    lock = threading.Lock()

    def on_answer():
        with lock:
            bar.update(1)

    def client_thread(c):
        try:
            run_client(d, per_client[c], window, d.query_timeout + 5.0, records[c], on_answer)
        except Exception as exc:  # noqa: BLE001 - reported after the join
            failures.append(f"client {c}: {type(exc).__name__}: {exc}")
    sampler = threading.Thread(target=sample_pools, args=(quick, time.perf_counter(), stop, pools),
                               daemon=True)
    threads = [threading.Thread(target=client_thread, args=(c,), name=f"bench-client-{c}")
               for c in range(len(per_client))]
    for t in (sampler, *threads):
        t.start()
    for t in threads:
        t.join()
    bar.close()
    stop.set()
    sampler.join(10.0)
    if failures:
        raise RuntimeError("; ".join(failures) + f"\n{_tails(folder)}")
    return [r for rs in records for r in rs], pools


def run_serve_bench(model: str, *, clients: int, queries: int, weights=None, input_shape=None,
                    relu_config=None, relu_protocol=None, rows: int = 1, max_batch: int = 32,
                    max_wait_ms: float = 10.0, sizes=None, pool_depth: int = 2, tls: bool = True,
                    dataset=None, data_dir=None, input_bound=None, window=None, progress=None,
                    hostile_seconds: float | None = None, command: str = "") -> dict:
    """The report of ``ringlet bench serve`` (see the module docstring); with ``hostile_seconds``
    also the ``hostile`` report of :mod:`ringlet.bench.hostile`."""
    t_command = time.perf_counter()
    sizes = [s for s in (1, 8, 32) if s <= max_batch] if sizes is None else list(sizes)
    window = queries if window is None else window
    _check_args(clients, queries, rows, max_batch, sizes, pool_depth, window)
    transport = "tls" if tls else "tcp"
    with tempfile.TemporaryDirectory(prefix="ringlet-bench-serve-") as tmp:
        folder = Path(tmp)
        path = write_deployment(folder, model, weights=weights, input_shape=input_shape,
                                relu_config=relu_config, relu_protocol=relu_protocol, dataset=dataset,
                                data_dir=data_dir, input_bound=input_bound, max_batch=max_batch,
                                max_wait_ms=max_wait_ms, sizes=sizes, pool_depth=pool_depth, tls=tls,
                                clients=("client", "client-b") if hostile_seconds else ("client",),
                                in_flight=clients * window + 64, links=2 * clients + 16)
        d = deploy.load(path)
        quick = dataclasses.replace(d, connect_timeout=2.0)  # the bench's own status calls
        compiled = load_model(d)  # exactly the servers' compilation: the plaintext reference
        n = clients * queries * rows
        x = bench_inputs(compiled, model, n, weights=weights, dataset=dataset, data_dir=data_dir,
                         input_bound=input_bound)
        with torch.no_grad():
            reference = compiled.graph.finish(compiled.run_plain(x.double())).double()
        per_client = [[(q, x[q * rows:(q + 1) * rows]) for q in range(c * queries, (c + 1) * queries)]
                      for c in range(clients)]
        procs = start_deployment(path, folder)
        try:
            wait_ready(quick, procs, folder)
            ours = json.loads(json.dumps(compiled.fingerprint()))
            if any(s["fingerprint"] != ours for s in Client(quick).status()):
                raise RuntimeError("the servers compiled another model than this process's "
                                   "reference (fingerprints differ: random weights? give --weights)")
            records, pools = run_load(d, quick, per_client, window, folder, progress)
            batch = mean_batch(d)
            hostile = None
            if hostile_seconds:
                hostile = run_hostile(
                    d, quick, procs, lambda name: start_party(path, folder, name),
                    lambda ps, t: wait_ready(quick, ps, folder, t, pool=False), per_client, window,
                    hostile_seconds, reference, rows, tuple(compiled.graph.input_shape),
                    lambda msg: print(f"[bench serve] {msg}", file=sys.stderr, flush=True))
        finally:
            stop_deployment(procs)
    result = score(records, reference, rows)
    k = min(n, 4 * max_batch)  # the one-shot baseline (4 batches), after the deployment is gone
    runs = []
    for _ in range(3):  # time on a shared machine is noisy: the median of three one-shot runs
        report, _ = private_inference(compiled, x[:k], transport=transport, batch=max_batch,
                                      progress=False, threads=1)
        runs.append(report)
    runs.sort(key=lambda r: r["images_per_second"])
    report = runs[1]
    infer, served = report["images_per_second"], result["throughput"]
    worst = result.pop("max_abs_logit_error")
    return {"command": command, "model": model, "clients": clients, "queries": clients * queries,
            "rows_per_query": rows, **result, "mean_batch": batch, "pool_depth": pools,
            "infer_throughput": infer, "infer_seconds_online": report["seconds_online"],
            "infer_throughputs": [r["images_per_second"] for r in runs],
            "throughput_ratio": served / infer if served and infer else None,
            "transport": transport, "max_batch": max_batch, "sizes": list(d.sizes),
            "pool_depth_setting": pool_depth, "max_abs_logit_error": worst,
            **({"hostile": hostile} if hostile else {}),
            "seconds": time.perf_counter() - t_command}
