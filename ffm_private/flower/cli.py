"""``ffm-private flower ...``: run a config on Flower (flwr loads only when a command runs)."""

from __future__ import annotations

import argparse
from typing import Any

FLOWER_EPILOG = """\
examples:
  ffm-private flower local --config examples/quickstart.toml --nodes 8
  ffm-private flower certs --out certs --nodes 8      # test CA, SuperLink cert, node keys
  ffm-private flower local --config run.toml --nodes 8 --tls certs

Multi-machine commands (SuperLink on one host, SuperNodes elsewhere): docs/deploy.md.
"""


def add_flower_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``flower`` (``local``, ``certs``) on an argparse sub-parser collection."""
    p = subparsers.add_parser(
        "flower", help="run on Flower: a SuperLink and SuperNodes (one user per node)",
        description="Run a config on Flower 1.41 (the flower extra): the same rounds as "
        "ffm-private train, with each user's personal state on their own SuperNode.",
        epilog=FLOWER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="flower_command", required=True, metavar="SUBCOMMAND")
    local = sub.add_parser("local", help="start a SuperLink and N SuperNodes on 127.0.0.1 "
                           "and run the config with flwr run")
    local.add_argument("--config", required=True, help="the run's TOML config")
    local.add_argument("--nodes", type=int, required=True,
                       help="SuperNodes to start, serving the dataset's first N users")
    local.add_argument("--resume", action="store_true", help="continue the run in run_dir")
    local.add_argument("--overwrite", action="store_true", help="replace the run in run_dir")
    local.add_argument("--timeout", type=float, default=3600.0,
                       help="stop everything after this many seconds (default 3600)")
    local.add_argument("--round-timeout", type=float, default=300.0,
                       help="seconds a stage waits for the nodes' replies (default 300)")
    local.add_argument("--tls", metavar="DIR",
                       help="TLS and SuperNode authentication with the files of "
                       "'ffm-private flower certs' in DIR")
    local.set_defaults(func=cmd_local)
    certs = sub.add_parser("certs", help="write a test CA, a SuperLink certificate for "
                           "127.0.0.1 and SuperNode authentication keys")
    certs.add_argument("--out", required=True, help="directory to write")
    certs.add_argument("--nodes", type=int, default=8, help="SuperNode key pairs (default 8)")
    certs.set_defaults(func=cmd_certs)
    return p


def cmd_local(args: argparse.Namespace) -> int:
    from ffm_private.flower.local import run_local

    tls = None
    if args.tls:
        from ffm_private.flower.certs import load_tls

        tls = load_tls(args.tls, args.nodes)
    run_dir = run_local(args.config, args.nodes, resume=args.resume, overwrite=args.overwrite,
                        timeout=args.timeout, round_timeout=args.round_timeout, tls=tls)
    print(f"run directory: {run_dir} (summary.md); node directories: {run_dir}.nodes/")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from ffm_private.flower.certs import write_test_certificates

    tls = write_test_certificates(args.out, args.nodes)
    print(f"wrote a test CA ({tls.ca_cert}), a SuperLink certificate for 127.0.0.1 and "
          f"{len(tls.node_keys)} SuperNode keys to {args.out}; for tests only")
    return 0
