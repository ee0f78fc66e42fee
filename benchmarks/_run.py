"""Entry point of every benchmark child process (the orchestrator starts these).

    python benchmarks/_run.py CONTESTANT server --loop L --dir RUN_DIR
    python benchmarks/_run.py CONTESTANT client --loop L --scenario S --info JSON
        --params JSON [--index I --conns N]

(and ``--max-connections N`` for a server in scenario G).

A server prints one JSON line (how to reach it), serves until its stdin
closes. A client prints ``{"connected": n}`` (E, F and G, then waits for
``go`` on stdin; G then prints ``{"invoked": {...}}`` and waits for a second
``go``) and finally ``{"result": {...}}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from typing import Any

from _common import Params, emit, raise_fd_limit, run_asyncio

CONTESTANTS = {
    "floor": "contestants.floor",
    "ipcbus": "contestants.ipcbus_",
    "ipcbus-async": "contestants.ipcbus_",
    # ipcbus as of another checkout ($IPCBUS_BEFORE: its src/): before/after tables
    "ipcbus-before": "contestants.ipcbus_",
    "ipcbus-sync": "contestants.ipcbus_sync",
    "ipcbus-sync-before": "contestants.ipcbus_sync",  # ipcbus.sync as of $IPCBUS_BEFORE
    "ipcbus-sync-sleep": "contestants.ipcbus_sync_sleep",
    "ipcbus-wire": "contestants.ipcbus_wire",
    "loop-wire": "contestants.loop_wire",
    "pyzmq": "contestants.pyzmq_",
    "socketio": "contestants.socketio_",
    "grpc": "contestants.grpc_",
    "mpconn": "contestants.mpconn",
}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: the scenario did not finish within the client's time limit"
    return f"{type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("contestant", choices=sorted(CONTESTANTS))
    parser.add_argument("role", choices=("server", "client"))
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--dir", default="")
    parser.add_argument("--scenario", default="A")
    parser.add_argument("--info", default="{}")
    parser.add_argument("--params", default="")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--conns", type=int, default=1)
    parser.add_argument("--max-connections", type=int, default=0, help="server: 0 = default")
    args = parser.parse_args()
    raise_fd_limit()
    if args.contestant.endswith("-before"):
        sys.path.insert(0, os.environ["IPCBUS_BEFORE"])
    module: Any = importlib.import_module(CONTESTANTS[args.contestant])
    if hasattr(module, "configure"):
        module.configure(args.contestant)
    if args.role == "server":
        if args.max_connections:  # G: ipcbus's limit; a contestant without one ignores it
            module.serve(args.dir, args.loop, max_connections=args.max_connections)
        else:
            module.serve(args.dir, args.loop)
        return
    params = Params.from_json(args.params) if args.params else Params.make(quick=True)
    info = json.loads(args.info)
    try:
        if hasattr(module, "run_client"):  # blocking contestants drive themselves
            result = module.run_client(info, args.scenario, params, args.index, args.conns)
        else:
            from _driver import run_scenario

            async def go() -> dict[str, Any]:
                return await run_scenario(
                    module.connect,
                    info,
                    args.scenario,
                    params,
                    args.index,
                    args.conns,
                    getattr(module, "refusal", None),  # G: one connection too many
                )

            runner = getattr(module, "run", run_asyncio)
            result = runner(go, args.loop)
    except BaseException as exc:  # report, never hang: the orchestrator shows this
        traceback.print_exc(file=sys.stderr)
        emit({"error": _describe(exc)})
        sys.exit(1)
    emit({"result": result})


if __name__ == "__main__":
    main()
