"""``ringlet party``: run one party of a private inference, for deployments across hosts.

Ranks: servers 0 … P−1 (P = --world-size, the number of servers), the dealer is rank P and the
client rank P+1. Either rank 0 hosts a rendezvous at --master ADDR:PORT, everyone connects to it, and
gloo connects every pair (plain TCP); or --deploy names a deployment file: the servers listen at its
addresses, the dealer and the client dial them, every link in TLS 1.3 with mutual certificate
authentication (``ringlet certs``), and a party that does not join within --connect-timeout is named.
"""

from __future__ import annotations

import sys

from ringlet.cli.common import (
    add_data_dir,
    add_debug,
    add_secure_options,
    command_line,
    print_json,
    relu_config_help,
)
from ringlet.protocols.piecewise import SMOOTH_METHODS


def add_parser(sub, name):
    p = sub.add_parser(name, help="run one party (server, dealer or client) over TCP")
    p.add_argument("--role", choices=["server", "dealer", "client"], required=True)
    p.add_argument("--rank", type=int, help="this party's rank (servers 0..P-1; dealer P; client P+1)")
    p.add_argument("--world-size", type=int, required=True, help="number of servers P")
    p.add_argument("--master", help="ADDR:PORT of rank 0's rendezvous (gloo over plain TCP: NO "
                                    "authentication or encryption, any process that reaches it "
                                    "can join; a loopback address unless --insecure-plain-tcp)")
    p.add_argument("--insecure-plain-tcp", action="store_true",
                   help="allow --master on an address other than loopback (a private network "
                        "you trust; prefer --deploy, which links parties in TLS 1.3)")
    p.add_argument("--deploy", help="instead of --master: a deployment file; the parties link "
                                    "directly at its addresses, in TLS 1.3 with its certificates "
                                    "unless it turns TLS off (servers listen, the dealer and the "
                                    "client dial them)")
    p.add_argument("--connect-timeout", type=float, default=None,
                   help="seconds for every party to join (default: --timeout)")
    p.add_argument("--model", help="server: a saved model folder, a checkpoint, package.module:factory "
                                   "(with --weights) or a zoo name (with --input-shape: random "
                                   "weights); client (optional): the model whose normalisation to use")
    p.add_argument("--weights", help="with --model package.module:factory: its .safetensors weights")
    p.add_argument("--input-shape", help="server with a zoo name or a factory without metadata: C,H,W")
    p.add_argument("--relu-config", help=relu_config_help(" (servers)"))
    add_secure_options(p)  # servers: the protocols (every server must give the same)
    p.add_argument("--dataset", help="client: dataset name (test split); server: public calibration "
                                     "data (its training split), default: the model's dataset")
    p.add_argument("--samples", type=int, help="client: first N test images")
    p.add_argument("--input", help="client: .npy inputs (uint8 pixels or float model inputs)")
    p.add_argument("--labels", help="client: .npy labels of --input")
    p.add_argument("--normalize", help="client: MEAN,STD, none or raw (default: the model's or the "
                                       "dataset's normalisation)")
    p.add_argument("--frac-bits", type=int, default=None,
                   help="fixed-point fractional bits (default 16; a server: its model's)")
    p.add_argument("--ring-bits", type=int, default=None,
                   help="the ring Z_2^L, 32..64 (default 64; a server: its model's or its activation "
                        "config's); the dealer and the client must give the servers' value")
    p.add_argument("--smooth", choices=list(SMOOTH_METHODS), default=None)
    p.add_argument("--input-bound", type=float, help="server: the largest |input| to accept")
    p.add_argument("--batch", type=int, default=32, help="client: images per batch")
    p.add_argument("--results", help="client: stream per-batch predictions to this JSON-lines file")
    p.add_argument("--output", help="client: write the logits as .npy")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for any message")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")
    add_data_dir(p)
    add_debug(p)
    p.set_defaults(run=run)


def _rank(args) -> int:
    expected = {"dealer": args.world_size, "client": args.world_size + 1}.get(args.role)
    if args.role == "server":
        if args.rank is None or not 0 <= args.rank < args.world_size:
            raise ValueError(f"--rank {args.rank}: a server's rank is 0..{args.world_size - 1}")
        return args.rank
    if args.rank is not None and args.rank != expected:
        raise ValueError(f"--rank {args.rank}: the {args.role} is rank {expected} with "
                         f"--world-size {args.world_size}")
    assert expected is not None  # --role is server, dealer or client
    return expected


def run(args):
    import torch

    from ringlet.comm.transport import open_communicator
    from ringlet.runtime.launch import run_party
    from ringlet.session import World
    if args.world_size < 2:
        raise ValueError(f"--world-size {args.world_size}: need at least 2 servers")
    rank = _rank(args)
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be positive, got {args.timeout}")
    spec = _transport(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = World(args.world_size, has_client=True)
    server = client = None
    if args.role == "server":
        server = _server_job(args)
    elif args.role == "client":
        client = _client_job(args)
    comm = open_communicator(spec, rank, world, args.timeout, args.connect_timeout)
    try:
        frac = server.frac_bits if server is not None else args.frac_bits or 16
        ring_bits = server.ring_bits if server is not None else args.ring_bits or 64
        report = run_party(comm, world, server, client, None, False, frac, ring_bits=ring_bits)
    finally:
        comm.close()
    if args.role == "client":
        _finish_client(args, report.result, report)
    elif args.json:
        out = {"role": args.role, "rank": rank, "command": command_line(),
               "bytes_sent": report.total.bytes_sent(), "seconds": report.seconds_online}
        if args.role == "server":
            from ringlet.runtime.programs import SERVER_TAGS_EXCLUDED
            res = report.result
            out.update(seconds_online=res["seconds_online"],
                       online_bytes_sent=res["online"].bytes_sent(exclude=SERVER_TAGS_EXCLUDED),
                       rounds=max(res["batch_rounds"]))
        print_json(out)
    return 0


def _transport(args):
    """The transport of the run: gloo at --master, or direct (TLS) links of --deploy."""
    from ringlet.comm.transport import TransportSpec
    if (args.master is None) == (args.deploy is None):
        raise ValueError("give --master ADDR:PORT (gloo) or --deploy FILE (direct links, TLS)")
    if args.master is not None:
        host, _, port = args.master.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--master {args.master!r}: expected ADDR:PORT")
        from ringlet.comm.transport import warn_plain_tcp
        warn_plain_tcp()
        return TransportSpec("gloo", master=(host, int(port)),
                             insecure_plain_tcp=args.insecure_plain_tcp)
    from ringlet import deploy
    d = deploy.load(args.deploy)
    if len(d.servers) != args.world_size:
        raise ValueError(f"--world-size {args.world_size}: {args.deploy} has {len(d.servers)} servers")
    addresses = {r: d.server(r).address for r in range(args.world_size)}
    return TransportSpec("tls" if d.tls else "tcp", addresses=addresses, tls=d.tls_files(),
                         deployment=d.name)


def _server_job(args):
    import functools

    from ringlet import sources
    from ringlet.compiler.options import SecureOptions
    from ringlet.runtime.programs import server_program
    if not args.model:
        raise ValueError("a server needs --model")
    shape = tuple(int(v) for v in args.input_shape.split(",")) if args.input_shape else None
    model = sources.server_model(
        args.model, weights=args.weights, input_shape=shape, relu_config=args.relu_config,
        dataset=args.dataset, data_dir=args.data_dir, frac_bits=args.frac_bits,
        ring_bits=args.ring_bits, smooth=args.smooth, input_bound=args.input_bound,
        options=SecureOptions.from_args(args))
    job = functools.partial(server_program, model=model)
    job.frac_bits = model.fixed.frac_bits  # the session encodes as the model was compiled
    job.ring_bits = model.fixed.ring_bits
    return job


def _client_job(args):
    import functools

    from ringlet import sources
    from ringlet.models import MODEL_NAMES
    from ringlet.runtime.programs import client_program
    meta = (sources.resolve_model(args.model, weights=args.weights).meta
            if args.model and args.model not in MODEL_NAMES else {})
    inputs = sources.load_inputs(meta, dataset=args.dataset, samples=args.samples,
                                 input_path=args.input, labels_path=args.labels,
                                 data_dir=args.data_dir, normalize=args.normalize)
    args._labels = inputs.y
    return functools.partial(client_program, images=inputs.x, batch=args.batch,
                             results_path=args.results, labels=inputs.y,
                             progress=sys.stderr.isatty())


def _finish_client(args, result, report) -> None:
    from ringlet.runtime.programs import save_logits
    logits = result["logits"]
    if args.output:
        save_logits(args.output, logits)
    out = {"role": "client", "command": command_line(), "samples": int(logits.shape[0]),
           "input_bytes": report.total.bytes_sent(tags=("input",)),
           "output_bytes": report.total.bytes_received(tags=("output",)),
           "seconds": report.seconds_online,
           "predictions": logits.argmax(1).tolist()}
    if args._labels is not None:
        out["accuracy"] = float((logits.argmax(1) == args._labels).double().mean())
    if args.json:
        print_json(out)
    else:
        acc = f", accuracy {out['accuracy']:.4f}" if "accuracy" in out else ""
        print(f"{out['samples']} images{acc}; sent {out['input_bytes']} bytes, received "
              f"{out['output_bytes']} bytes, {out['seconds']:.2f} s")
