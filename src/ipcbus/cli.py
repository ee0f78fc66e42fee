"""The ``ipcbus`` command: ``ipcbus demo`` and ``ipcbus call ADDRESS CHANNEL [JSON_ARGS...]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ._errors import IpcError

__all__ = ("main",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipcbus", description="Electron-style IPC for Python processes."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="main spawns a renderer: ping/pong, invoke, push")
    demo.add_argument(
        "--web",
        action="store_true",
        help="serve the same in a web page (needs ipcbus[web]); prints the URL and opens it",
    )
    demo.add_argument("--no-browser", action="store_true", help="with --web: only print the URL")
    demo.add_argument("--port", type=int, default=0, help="with --web: default any free port")
    call = sub.add_parser("call", help="invoke a handler and print its JSON result")
    call.add_argument("address", help="e.g. unix:/tmp/ipcbus-xyz/main.sock or tcp://127.0.0.1:PORT")
    call.add_argument("channel")
    call.add_argument("args", nargs="*", help="arguments, each a JSON value")
    call.add_argument(
        "--token",
        help="the listener's token (default: $IPCBUS_TOKEN); write --token=VALUE "
        "if it starts with '-'",
    )
    call.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")
    return parser


async def _call(
    address: str, channel: str, args: list[Any], token: str | None, timeout: float
) -> Any:
    from .renderer import connect

    async with connect(address, token=token) as renderer:
        return await renderer.invoke(channel, *args, timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ipcbus`` console script and ``python -m ipcbus``."""
    ns = _parser().parse_args(argv)
    if ns.command == "demo" and ns.web:
        from ._demo import run_web

        try:
            run_web(not ns.no_browser, ns.port)
        except KeyboardInterrupt:
            pass
        return 0
    if ns.command == "demo":
        from ._demo import run_main

        anyio.run(run_main)
        return 0
    try:
        args = [json.loads(a) for a in ns.args]
    except json.JSONDecodeError as exc:
        print(f"ipcbus call: an argument is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        result = anyio.run(_call, ns.address, ns.channel, args, ns.token, ns.timeout)
    except IpcError as exc:
        print(f"ipcbus call: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str))
    return 0
