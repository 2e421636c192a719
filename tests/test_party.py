"""Multi-host launch: ``ringlet party`` processes on this machine, optionally in network namespaces."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ringlet.comm.transport import free_port

ROOT = Path(__file__).resolve().parents[1]
RINGLET = [sys.executable, "-m", "ringlet.cli.main"]
MODEL = str(ROOT / "models" / "fmnist-net-fmnist")


def _launch(master, netns_for_server1=None, samples=8, model=(MODEL,), dataset="fashion-mnist"):
    """``master``: ADDR:PORT (gloo), or a deployment file (direct links, TLS if it says so)."""
    link = ["--deploy", str(master)] if str(master).endswith(".toml") else ["--master", master]
    if not str(master).endswith(".toml") and not str(master).startswith("127."):
        link.append("--insecure-plain-tcp")  # gloo off loopback is refused without it
    common = ["--world-size", "2", *link, "--timeout", "60"]
    procs = []
    model = ["--model", *model]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    for args, ns in ((["--role", "server", "--rank", "0", *model, "--json"], None),
                     (["--role", "server", "--rank", "1", *model], netns_for_server1),
                     (["--role", "dealer"], None)):
        cmd = RINGLET + ["party"] + args + common
        if ns:
            cmd = ["ip", "netns", "exec", ns] + cmd
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env))
    client = subprocess.run(RINGLET + ["party", "--role", "client", "--dataset", dataset,
                                       "--samples", str(samples), "--batch", "4", "--json"] + common,
                            capture_output=True, text=True, timeout=240)
    outs = [p.communicate(timeout=60) for p in procs]
    assert client.returncode == 0, client.stderr[-2000:]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    return json.loads(client.stdout), json.loads(outs[0][0])


def _deployment(folder: Path, tls: bool) -> Path:
    """A deployment file (with certificates) for one-shot ``ringlet party`` runs."""
    from ringlet import deploy
    from ringlet.comm.certs import make_dev_certs
    raw = {"version": 1, "name": "party-test", "tls": {"enabled": tls, "folder": "certs"},
           "parties": {"server-0": {"address": f"127.0.0.1:{free_port()}"},
                       "server-1": {"address": f"127.0.0.1:{free_port()}"}, "dealer": {}, "client": {}},
           "model": {"source": MODEL}}
    path = deploy.write(folder / "deploy.toml", raw)
    if tls:
        make_dev_certs(folder / "certs", list(raw["parties"]))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("link", ["tcp", "tls"])
def test_party_processes_on_localhost(link, tmp_path):
    where = f"127.0.0.1:{free_port()}" if link == "tcp" else _deployment(tmp_path, tls=True)
    client, server0 = _launch(where)
    assert client["samples"] == 8 and len(client["predictions"]) == 8
    assert client["accuracy"] >= 0.5  # the shipped model on real Fashion-MNIST images
    assert client["input_bytes"] == 8 * 28 * 28 * 8  # one 64-bit share per pixel to one server
    assert server0["bytes_sent"] > 0


@pytest.mark.slow
def test_party_servers_run_a_users_factory_with_its_weights(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file
    from userzoo import resnet18_cifar

    from ringlet.data import load_dataset
    torch.manual_seed(0)  # test weights only
    weights = tmp_path / "w.safetensors"
    save_file(resnet18_cifar().state_dict(), str(weights))
    model = ("userzoo:resnet18_cifar", "--weights", str(weights), "--input-shape", "3,32,32",
             "--dataset", "synthetic-cifar")
    client, server0 = _launch(f"127.0.0.1:{free_port()}", samples=4, model=model,
                              dataset="synthetic-cifar")
    assert client["samples"] == 4 and server0["rounds"] > 0
    net = resnet18_cifar().eval()
    net.load_state_dict(load_file(str(weights)))
    x, _ = load_dataset("synthetic-cifar", "test").tensors(4)
    assert client["predictions"] == net(x).argmax(1).tolist()


def _can_netns() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _can_netns(), reason="network namespaces need root and iproute2")
def test_party_across_network_namespaces():
    ns, a, b = f"rgl{os.getpid()}", f"rga{os.getpid() % 10000}", f"rgb{os.getpid() % 10000}"
    sh = lambda *c: subprocess.run(c, check=True, capture_output=True)  # noqa: E731
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", b, "netns", ns)
        sh("ip", "addr", "add", "10.78.0.1/24", "dev", a)
        sh("ip", "link", "set", a, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", "10.78.0.2/24", "dev", b)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", b, "up")
        client, _ = _launch(f"10.78.0.1:{free_port()}", netns_for_server1=ns, samples=4)
        assert client["samples"] == 4
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_gloo_off_loopback_needs_the_insecure_flag_and_every_run_warns():
    out = subprocess.run(RINGLET + ["party", "--role", "dealer", "--world-size", "2", "--master",
                                    "10.78.0.1:29500", "--timeout", "5"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "not a loopback address" in out.stderr and "--insecure-plain-tcp" in out.stderr
    assert "Traceback" not in out.stderr
    assert "no authentication" in out.stderr  # the warning comes first
    helptext = subprocess.run(RINGLET + ["party", "--help"], capture_output=True, text=True,
                              timeout=60).stdout
    assert "NO authentication" in helptext.replace("\n", " ")


def test_the_gloo_rendezvous_listens_on_the_master_address_only():
    import threading

    from ringlet.comm.tcp import TcpCommunicator
    port = free_port()
    comms = {}

    def join(rank):
        comms[rank] = TcpCommunicator(rank, 2, "127.0.0.1", port, 30)
    threads = [threading.Thread(target=join, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                   text=True).stdout.split()
        assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening
        assert f"*:{port}" not in listening and f"[::]:{port}" not in listening
    finally:
        for c in comms.values():
            c.close()
