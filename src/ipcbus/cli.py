"""The ``ipcbus`` command: ``ipcbus demo`` and ``ipcbus call ADDRESS CHANNEL [JSON_ARGS...]``.

Every error is one line on stderr, ``ipcbus call: ...``, never a traceback,
and the exit status says what kind of error it was (docs/guide.md, section 4):

* 0: the call returned; its result is printed as JSON on stdout.
* 1: main answered with an error (``RemoteError``, ``NoHandlerError``,
  ``ValidationError``...).
* 2: the command line is wrong (an option, an address, an argument that is
  not JSON); argparse's own usage errors exit 2 as well.
* 3: main could not be reached, refused the connection (token, version), or
  the connection was lost before the reply.
* 4: no reply (or no handshake) within ``--timeout`` seconds.
* 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from ._addresses import parse_address
from ._errors import (
    AuthenticationError,
    ConnectionClosedError,
    IpcError,
    IpcTimeoutError,
    ProtocolError,
)

__all__ = ("main",)

EXIT_OK = 0
EXIT_CALL_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130


def _version() -> str:
    from . import __version__

    return f"ipcbus {__version__}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipcbus",
        description="Electron-style IPC for Python processes.",
        epilog="ipcbus call exits 0 on success, 1 if main answered with an error, 2 on a "
        "bad command line, 3 if main could not be reached or the connection was lost, "
        "4 on a timeout.",
    )
    parser.add_argument("--version", action="version", version=_version())
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
    call.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to connect, and to wait (default 30)"
    )
    return parser


async def _call(
    address: str, channel: str, args: list[Any], token: str | None, timeout: float
) -> Any:
    from .renderer import connect

    async with connect(address, token=token, timeout=timeout) as renderer:
        return await renderer.invoke(channel, *args, timeout=timeout)


def _fail(message: str, status: int) -> int:
    """Print one line (whatever newlines ``message`` holds) and return ``status``."""
    line = " | ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"ipcbus call: {line}", file=sys.stderr)
    return status


def _check_address(address: str) -> str | None:
    """Why ``address`` cannot be used, or ``None`` if it can."""
    try:
        parse_address(address)
    except ValueError as exc:
        hint = ""
        if address.startswith(("/", ".", "~")) or os.sep in address:
            hint = f" (for a unix socket, write 'unix:{address}')"
        return f"{exc}{hint}"
    return None


def _exit_status(exc: IpcError) -> int:
    if isinstance(exc, IpcTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, (ConnectionClosedError, AuthenticationError, ProtocolError)):
        return EXIT_UNREACHABLE
    return EXIT_CALL_FAILED


def _run_call(ns: argparse.Namespace) -> int:
    try:
        args = [json.loads(a) for a in ns.args]
    except json.JSONDecodeError as exc:
        return _fail(f"an argument is not valid JSON: {exc}", EXIT_USAGE)
    if (problem := _check_address(ns.address)) is not None:
        return _fail(problem, EXIT_USAGE)
    if not ns.channel:
        return _fail("the channel must be a non-empty string", EXIT_USAGE)
    # Errors are reported below, once; without this, logging's last-resort
    # handler would print the renderer side's warnings about the same failure.
    logging.getLogger("ipcbus").addHandler(logging.NullHandler())
    try:
        result = anyio.run(_call, ns.address, ns.channel, args, ns.token, ns.timeout)
    except IpcError as exc:
        return _fail(f"{type(exc).__name__}: {exc}", _exit_status(exc))
    except ValueError as exc:  # an address connect() refuses, e.g. TCP off loopback
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    print(json.dumps(result, default=str))
    return EXIT_OK


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
        return EXIT_OK
    return _run_call(ns)
