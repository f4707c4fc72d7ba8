"""`diffusionlab serve RUN_DIR ...`: the web playground (serve/) on 127.0.0.1.

Every run is loaded, and the address bound, before the server starts: a bad run directory or a taken port is one
line and exit 2. The page is at the printed address; Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .args import add_precision_flag, int_in, non_negative_float

DEFAULT_PORT = 8765
FRAME_INTERVAL = 0.1  # serve/app.py's default, repeated here so that `--help` does not import FastAPI


def add_parser(sub: Any) -> None:
    """The `serve` sub-command."""
    s = sub.add_parser("serve", help="a web playground for trained runs (sample, compare samplers, inpaint, edit)",
                       description="Serve a local web page to sample the given runs with any sampler and watch x_t and "
                                   "the x0 prediction as it runs, compare two samplers on one seed, inpaint a painted "
                                   "mask (RePaint) and edit an image (SDEdit). Only the given runs can be read.")
    s.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="runs to serve (default: every run directory in ./runs)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int_in(0, 65535), default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}; 0: any free port)")
    s.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA weights")
    s.add_argument("--frame-interval", type=non_negative_float, default=FRAME_INTERVAL, metavar="SECONDS",
                   help=f"stream x_t and the x0 prediction at most this often (default {FRAME_INTERVAL}; "
                        "0: every step)")
    add_precision_flag(s)


def find_runs(args: argparse.Namespace) -> list[Path]:
    """The run directories to serve: the arguments, or the runs in ./runs."""
    from ..training.checkpoint import latest_checkpoint

    if args.run_dirs:
        return [Path(p) for p in args.run_dirs]
    root = Path("runs")
    found = []
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            if (p / "config.json").is_file() and latest_checkpoint(p) is not None:
                found.append(p)
        except Exception:  # not a finished run: leave it out of the default list
            continue
    if not found:
        raise ConfigError("no runs to serve: give RUN_DIR (a trained run), or run it where ./runs holds runs")
    return found


def bind(host: str, port_: int) -> socket.socket:
    """A listening socket on host:port, or a one-line error (bad address, port taken)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port_))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port_}: {e.strerror or e}") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    """`diffusionlab serve`."""
    try:
        import uvicorn

        from ..serve.app import create_app, run_ids
    except ImportError as e:
        raise ConfigError(f"serve needs FastAPI and uvicorn ({e.name} is missing): "
                          "pip install 'diffusionlab[serve]'") from None
    from ..api import load_run

    paths = find_runs(args)
    runs = {}
    for rid, path in zip(run_ids(paths), paths):
        if not path.is_dir():
            raise ConfigError(f"run directory {path} does not exist")
        runs[rid] = load_run(path, ema=not args.no_ema, mixed_precision=args.mixed_precision)
    sock = bind(args.host, args.port)
    host, bound = sock.getsockname()[:2]
    if _is_ip(host) and not ipaddress.ip_address(host).is_loopback:
        print(f"warning: listening on {host}: other machines on the network can use this playground",
              file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"playground: http://{shown}:{bound}/  ({len(runs)} run(s): {', '.join(runs)}; Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(runs, args.frame_interval), log_level="warning", access_log=False,
                                          timeout_graceful_shutdown=2))
    server.run(sockets=[sock])
    return 0


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


__all__ = ["add_parser", "run"]
