"""The bundled demonstration behind ``make demo`` / ``ringlet demo``."""

from __future__ import annotations

import torch

from ringlet.launch import run_local
from ringlet.prng import AesCtrStream
from ringlet.protocols import beaver, linear
from ringlet.protocols.io import reveal, share_input
from ringlet.protocols.truncation import truncate

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
