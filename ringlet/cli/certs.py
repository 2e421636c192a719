"""``ringlet certs --deploy D``: a development CA and a certificate for every party of a deployment.

The files go to the deployment's ``[tls] folder`` (``ca.pem``, ``NAME.pem``, ``NAME.key``; keys
mode 0600). An existing CA signs new parties; existing files are kept unless ``--overwrite``.
Production deployments bring their own PKI: any CA whose certificates name the parties will do.
"""

from __future__ import annotations

from ringlet.cli.common import add_debug, command_line, print_json


def add_parser(sub, name):
    p = sub.add_parser(name, help="make a development CA and party certificates for a deployment")
    p.add_argument("--deploy", required=True, help="the deployment file (TOML or JSON)")
    p.add_argument("--clients", default="", help="more client names, comma-separated (client-NAME)")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--overwrite", action="store_true", help="replace existing files (a new CA)")
    p.add_argument("--json", action="store_true")
    add_debug(p)
    p.set_defaults(run=run)


def run(args):
    from ringlet import deploy
    from ringlet.comm.certs import make_dev_certs
    d = deploy.load(args.deploy)
    if not d.tls:
        raise ValueError(f"{args.deploy}: [tls] enabled = false; nothing to make")
    names = list(d.parties) + [n.strip() for n in args.clients.split(",") if n.strip()]
    bad = [n for n in names if not (n in d.parties or n.startswith("client"))]
    if bad:
        raise ValueError(f"--clients {', '.join(bad)}: client names start with 'client'")
    folder = d.ca.parent
    existing = [n for n in names if (folder / f"{n}.pem").exists()]
    todo = names if args.overwrite else [n for n in names if n not in existing]
    made = make_dev_certs(folder, todo, days=args.days, overwrite=args.overwrite) if todo else {}
    out = {"command": command_line(), "folder": str(folder), "ca": str(d.ca),
           "made": sorted(n for n in made if n != "ca"), "kept": sorted(set(existing) - set(todo))}
    if args.json:
        print_json(out)
    else:
        print(f"certificates in {folder}: made {', '.join(out['made']) or 'none'}"
              + (f"; kept {', '.join(out['kept'])}" if out["kept"] else ""))
    return 0
