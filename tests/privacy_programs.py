"""Programs of the transport-level privacy test (importable: every party is a process)."""

from __future__ import annotations

import torch

from ringlet.compiler.model import SecureInterpreter
from ringlet.protocols.io import reveal, share_input

BATCH = 2


class Capturing(SecureInterpreter):
    """A server's run that keeps its share of every node's output."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, node, ins):
        out = super().run_node(node, ins)
        self.values[node.name] = out.data.clone()
        return out


def server(sess, model, leak: bool = False) -> dict:
    """Run ``model`` on the client's input; record every tensor this server receives.

    ``leak``: the mutation the test must catch — server 0 forwards its output share to server 1.
    """
    received = []
    sess.comm.on_receive = lambda src, items: received.append(
        (src, [(tag, t.clone()) for tag, t in items]))
    x = share_input(sess, None, sess.world.client, (BATCH, *model.graph.input_shape))
    interp = Capturing(model, sess)
    y = interp.run(x)
    if leak and sess.rank == 0:
        sess.comm.send(1, [("other", y.data)], "leak")
    elif leak and sess.rank == 1:
        sess.comm.recv(0, "leak")
    reveal(sess, y, to=sess.world.client)
    sess.comm.on_receive = None
    return {"received": received, "shares": {"input": x.data, **interp.values, "logits": y.data}}


def client(sess, x: torch.Tensor, out_shape) -> torch.Tensor:
    share_input(sess, x, sess.rank, tuple(x.shape))
    return reveal(sess, None, to=sess.rank, decode=False, shape=(x.shape[0], *out_shape))
