"""The bundled demonstrations behind ``make demo`` / ``ringlet demo``.

The main job: a private inference of the shipped ResNet-20 (Fashion-MNIST) on real test images,
two servers, a dealer and a client on this machine. ``--core`` runs a smaller protocol-level demo.
"""

from __future__ import annotations

import torch

from ringlet.jobs.infer import run_inference
from ringlet.prng import AesCtrStream
from ringlet.protocols.arith import beaver, linear
from ringlet.protocols.arith.truncation import truncate
from ringlet.protocols.io import reveal, share_input
from ringlet.runtime.launch import run_local
from ringlet.train.checkpoint import find_checkpoint

_SHAPE = (4, 3, 16, 16)


def _demo_data():
    # public, reproducible demo values (they are the client's input, not protective randomness)
    s = AesCtrStream(bytes(16))
    to_float = lambda t: (t & 0xFFFF).double() / 0xFFFF * 2 - 1  # noqa: E731
    return to_float(s.int64(_SHAPE)) * 2, to_float(s.int64((8, 3, 3, 3))) * 0.5, to_float(s.int64(8))


def _server(sess):
    _, weight, bias = _demo_data()
    f = sess.fixed
    x = share_input(sess, None, sess.world.client, _SHAPE)              # client's private image
    y = linear.conv2d_public(x, f.encode(weight), f.encode(bias) << f.frac_bits, padding=1)
    y = truncate(sess, y, f.frac_bits)                                   # public-weight conv
    y = beaver.mul(sess, y, y)                                           # secret × secret
    y = linear.avg_pool2d(sess, y, 2)                                    # average pooling
    reveal(sess, y, to=sess.world.client)                                # only the client learns it
    return tuple(y.shape)


def _client(sess):
    x, _, _ = _demo_data()
    share_input(sess, x, sess.rank, _SHAPE)
    return reveal(sess, None, to=sess.rank)


def core_demo(parties: int = 2, transport: str = "local", log=print) -> dict:
    x, weight, bias = _demo_data()
    plain = torch.nn.functional.avg_pool2d(torch.nn.functional.conv2d(x, weight, bias, padding=1) ** 2, 2)
    res = run_local(_server, parties, client=_client, transport=transport, pregenerate=True)
    err = (res.client_result - plain).abs().max().item()
    assert res.world.client is not None  # run with a client
    client = res.reports[res.world.client].online
    summary = {
        "what": "client secret-shares a 4x3x16x16 tensor; servers compute avgpool2(conv3x3(x)^2) "
                "with public conv weights and a Beaver square; only the client learns the result",
        "parties": parties, "transport": transport,
        "max_abs_error": err,
        "bytes_sent_per_server": res.max_sent(),
        "rounds": res.rounds(),
        "input_bytes": client.bytes_sent(tags=("input",)),
        "output_bytes": sum(r.online.bytes_sent(tags=("output",)) for r in res.servers),
        "offline_bytes": res.offline_bytes(),
        "seconds_online": res.seconds_online,
    }
    if log:
        log(f"ringlet demo: {summary['what']}")
        log(f"  {parties} servers + dealer + client over '{transport}' transport")
        log(f"  max |secure - plaintext| = {err:.2e}")
        log(f"  online: {summary['bytes_sent_per_server']} bytes sent per server, "
            f"{summary['rounds']} rounds, {summary['seconds_online'] * 1e3:.1f} ms")
        log(f"  input {summary['input_bytes']} bytes, output {summary['output_bytes']} bytes, "
            f"offline (dealer) {summary['offline_bytes']} bytes")
    return summary


def inference_demo(samples: int = 256, batch: int = 64, parties: int = 2, transport: str = "local",
                   model: str | None = None, log=print) -> dict:
    if model is None:
        model = next((m for m in ("resnet20-fmnist", "fmnist-net-fmnist") if find_checkpoint(m)), None)
        if model is None:
            raise FileNotFoundError("no shipped model found in models/ (resnet20-fmnist.*)")
    if log:
        log(f"ringlet demo: private inference of the shipped model '{model}' on {samples} real "
            f"Fashion-MNIST test images ({parties} servers + dealer + client, '{transport}' transport)")
    report, _ = run_inference(model, dataset="fashion-mnist", samples=samples, batch=batch,
                              parties=parties, transport=transport, progress=log is not None)
    if log:
        log(f"  secure accuracy    {report['accuracy']:.4f}   (plaintext {report['plaintext_accuracy']:.4f}; "
            f"same argmax on {report['argmax_agreement'] * 100:.1f} % of images)")
        log(f"  max |logit error|  {report['max_abs_logit_error']:.2e}")
        log(f"  online             {report['bytes_sent_per_party'] / 1e6:.1f} MB sent per server, "
            f"{report['rounds']} rounds per batch, {report['seconds_online']:.1f} s "
            f"({report['images_per_second']:.1f} images/s)")
        log(f"  offline (dealer)   {report['offline_bytes'] / 1e6:.1f} MB, {report['seconds_offline']:.1f} s")
        log(f"  ReLUs per image    {report['relus_per_image']}")
    return report
