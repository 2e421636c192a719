"""A deployment of ``ringlet serve`` processes on loopback, for the serving tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from ringlet import deploy as deployment
from ringlet.comm.transport import free_port

HERE = Path(__file__).parent


def save_weights(path: Path, factory: str = "tiny_net", seed: int = 1) -> Path:
    import servezoo
    from safetensors.torch import save_file
    torch.manual_seed(seed)  # not secret: a test model's public weights
    module = getattr(servezoo, factory)().eval()
    save_file(module.state_dict(), str(path))
    return path


class LocalDeployment:
    """Servers, dealer and clients of one deployment file in ``folder``."""

    def __init__(self, folder: Path, *, tls: bool = True, max_batch: int = 4, sizes=(1, 4),
                 depth: int = 2, query_timeout: float = 10.0, max_wait_ms: float = 5.0,
                 metrics: bool = True, timeouts: dict | None = None, limits: dict | None = None,
                 metrics_all: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_weights(self.folder / "tiny.safetensors")
        self.raw = {
            "version": 1, "name": "test-deploy", "tls": {"enabled": tls, "folder": "certs"},
            "parties": {"server-0": {"address": f"127.0.0.1:{free_port()}"},
                        "server-1": {"address": f"127.0.0.1:{free_port()}"},
                        "dealer": {}, "client": {}, "client-b": {}},
            "model": {"source": "servezoo:tiny_net", "weights": "tiny.safetensors",
                      "input_shape": [1, 8, 8], "input_bound": 4.0},
            "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "sizes": list(sizes)},
            "pool": {"depth": depth},
            "timeouts": {"connect": 10, "message": 20, "query": query_timeout, **(timeouts or {})},
        }
        if limits:
            self.raw["limits"] = dict(limits)
        for name in ("server-0", "server-1") if metrics_all else ("server-0",) if metrics else ():
            self.raw["parties"][name]["metrics"] = f"127.0.0.1:{free_port()}"
        self.path = deployment.write(self.folder / "deploy.toml", self.raw)
        self.d = deployment.load(self.path)
        if tls:
            from ringlet.comm.certs import make_dev_certs
            make_dev_certs(self.folder / "certs", list(self.raw["parties"]))
        self.procs: dict[str, subprocess.Popen] = {}

    def variant(self, name: str, **model) -> Path:
        """Another deployment file: the same parties and certificates, another model section."""
        raw = {**self.raw, "model": {**self.raw["model"], **model}}
        return deployment.write(self.folder / name, raw)

    def start(self, name: str, deploy_file: Path | None = None) -> subprocess.Popen:
        role = "dealer" if name == "dealer" else "server"
        cmd = [sys.executable, "-m", "ringlet.cli.main", "serve", "--deploy",
               str(deploy_file or self.path), "--role", role, "--threads", "1"]
        if role == "server":
            cmd += ["--rank", name.split("-")[1]]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), *sys.path]))
        log = open(self.folder / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_all(self, timeout: float = 90.0) -> LocalDeployment:
        for name in ("server-0", "server-1", "dealer"):
            self.start(name)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0, pool: bool = True) -> None:
        from ringlet.serve.client import Client
        try:
            Client(self.d).wait_ready(timeout, pool=self.d.pool_depth if pool else False)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.logs()}") from None

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.folder.glob("*.log")))

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def client(self, name: str = "client", **kw):
        from ringlet.serve.client import Client
        return Client(self.d, name, **kw)

    def kill(self, name: str, sig=signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(30)

    def metrics(self, server: int = 0) -> dict[str, float]:
        import urllib.request
        host, port = self.d.server(server).metrics
        text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def health(self, server: int = 0) -> dict:
        """The server's /healthz JSON (``waiting``: the queries it holds, ``clients``: its client
        links, ``ok``: serving and not draining, …); 503 (not ok) is an answer too."""
        import json
        import urllib.error
        import urllib.request
        host, port = self.d.server(server).metrics
        try:
            body = urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5).read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        return json.loads(body)

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        import servezoo
        from safetensors.torch import load_file
        module = servezoo.tiny_net().double().eval()
        module.load_state_dict(load_file(str(self.folder / "tiny.safetensors")))
        with torch.no_grad():
            return module(x.double())

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


def inputs(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)  # not secret: public test inputs
    return torch.randn(n, 1, 8, 8, generator=gen).clamp(-3.9, 3.9)


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout:g} s")
