"""`serve`: the dashboard for a class on one server (owner and guests, the owner's limits): docs/SERVE.md."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import InvalidArgument

ROOT = Path(__file__).resolve().parents[2]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the dashboard to a class: an owner and guests with limits "
                                     "(docs/SERVE.md); `make app` stays the one-user, loopback dashboard")
    p.add_argument("--address", required=True,
                   help="the address to listen on: 127.0.0.1 behind a reverse proxy, 0.0.0.0 for every interface")
    p.add_argument("--port", type=int, default=8501, help="the port (default 8501)")
    p.add_argument("--limits", default=None, help="the owner's limits on guests, a .toml or .json file "
                                                   "(default: the built-in limits, docs/SERVE.md)")
    p.add_argument("--secret-file", default=None,
                   help="a file holding the owner's secret (default: $DDAUDIT_OWNER_SECRET, else a new one printed)")
    p.add_argument("--check", action="store_true", help="check the limits and secret, print them, start nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import classroom
    if not args.address.strip():
        raise InvalidArgument("--address is empty", "give 127.0.0.1 (behind a proxy) or 0.0.0.0 (every interface)")
    if not 1 <= args.port <= 65535:
        raise InvalidArgument(f"--port {args.port} is not a port", "give a number from 1024 to 65535")
    limits = classroom.read_limits(args.limits)
    secret, where = classroom.owner_secret(args.secret_file)
    env = {**os.environ, classroom.SERVE_ENV: "1", classroom.SECRET_ENV: secret,
           classroom.LIMITS_ENV: str(Path(args.limits).resolve()) if args.limits else ""}
    print(f"serving a class on http://{args.address}:{args.port} (guests: limits "
          f"{args.limits or 'built in'}; owner secret from {where if where != 'new' else 'nowhere: a new one'})")
    if where == "new":
        print(f"owner secret for this server: {secret}\n  (set {classroom.SECRET_ENV} or --secret-file to choose it)")
    print("limits: " + ", ".join(f"{k}={v}" for k, v in limits.as_dict().items()), flush=True)
    if args.check:
        return 0
    argv = [sys.executable, "-m", "streamlit", *classroom.streamlit_args(args.address, args.port, limits)]
    os.chdir(ROOT)  # app.py and .streamlit/config.toml are found from the repository root
    os.execve(sys.executable, argv, env)  # the server is this process: its pid, its signals
    return 0
