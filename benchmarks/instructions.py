"""Instructions per operation, counted by callgrind: a measure the machine's load does not move.

    python benchmarks/instructions.py            # send and invoke, about a minute
    python benchmarks/instructions.py --kind C   # one of them

Runs ``python benchmarks/instructions.py --run KIND N`` (main and one renderer in
one process, over a unix socket) under ``valgrind --tool=callgrind`` for two
values of N and divides the difference in instructions by the difference in
N, so start-up and connecting cancel out. Both sides are counted. Needs
valgrind (``apt-get install valgrind``).

KIND ``C``: one-way ``send`` to a sync ``on`` listener (then one ``invoke``
that checks the count); ``B``: ``invoke`` of a sync handler, 64 in flight;
``A``: the same, one at a time (each call a read and a write on both sides,
as in scenarios A and E). ``F``: broadcasts to 20 renderers, made one after
another by a handler that does not wait in between (as in scenario F), per
delivery; ``F1``: the same, but the handler yields to the loop after each
broadcast, so every broadcast is alone in its loop turn.

``--loop uvloop`` runs the workload on uvloop (``bench.py``'s E and F targets
are on both loops); ``--floor`` runs kinds A, B and C with the floor
contestant (``contestants/floor.py``: raw asyncio streams + msgspec) instead,
for the same count of the code ipcbus is measured against.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
from pathlib import Path

import anyio
import anyio.lowlevel

from ipcbus import IpcMain, IpcRenderer

_FANOUT = 20  # renderers in F and F1
_HERE = str(Path(__file__).resolve().parent)  # contestants/ is here


async def _fanout(kind: str, n: int) -> None:
    """``n`` deliveries: ``n // _FANOUT`` broadcasts to ``_FANOUT`` renderers."""
    m = n // _FANOUT
    ipc_main = IpcMain()

    async def bcast(event: object) -> None:
        for i in range(m):
            await ipc_main.broadcast("tick", i)
            if kind == "F1":
                await anyio.lowlevel.checkpoint()

    ipc_main.handle("bcast", bcast)
    async with ipc_main, contextlib.AsyncExitStack() as stack:
        listener = await ipc_main.listen()
        done = anyio.Event()
        left = m * _FANOUT

        def tick(event: object, i: int) -> None:
            nonlocal left
            left -= 1
            if not left:
                done.set()

        renderers = []
        for _ in range(_FANOUT):
            renderer = IpcRenderer()
            renderer.on("tick", tick)
            connecting = renderer.connect(listener.address, token=listener.token)
            await stack.enter_async_context(connecting)
            renderers.append(renderer)
        await renderers[0].invoke("bcast")
        await done.wait()


async def _floor(kind: str, n: int) -> None:
    """Kinds A, B and C with the floor's server and client, in one process."""
    import asyncio
    import os
    import tempfile

    sys.path.insert(0, _HERE)
    from contestants import floor

    stop, listening = asyncio.Event(), asyncio.Event()
    floor.stdin_closed = stop.wait  # type: ignore[assignment]  # serve until we are done
    floor.emit = lambda obj: listening.set()  # type: ignore[assignment]  # its address
    with tempfile.TemporaryDirectory() as run_dir:
        server = asyncio.create_task(floor._serve(run_dir))
        await listening.wait()
        address = os.path.join(run_dir, "floor.sock")
        async with floor.connect({"address": address}, None) as client:
            if kind == "C":
                for i in range(n):
                    await client.send(i)
                await client.totals()
            elif kind == "A":
                for i in range(n):
                    if await client.call(i) != i + 1:
                        raise SystemExit("A: a wrong result")
            else:

                async def worker() -> None:
                    for i in range(n // 64):
                        if await client.call(i) != i + 1:
                            raise SystemExit("B: a wrong result")

                await asyncio.gather(*(worker() for _ in range(64)))
        stop.set()
        await server


async def _workload(kind: str, n: int, floor: bool) -> None:
    if floor:
        await _floor(kind, n)
        return
    if kind in ("F", "F1"):
        await _fanout(kind, n)
        return
    count = 0

    def sink(event: object, x: int) -> None:
        nonlocal count
        count += 1

    ipc_main = IpcMain()
    ipc_main.on("sink", sink)
    ipc_main.handle("inc", lambda event, x: x + 1)
    ipc_main.handle("totals", lambda event: count)
    async with ipc_main:
        listener = await ipc_main.listen()
        renderer = IpcRenderer()
        async with renderer.connect(listener.address, token=listener.token):
            if kind == "C":
                for i in range(n):
                    await renderer.send("sink", i)
                if await renderer.invoke("totals") != n:
                    raise SystemExit("C: the count is wrong")
            elif kind == "A":
                for i in range(n):
                    if await renderer.invoke("inc", i) != i + 1:
                        raise SystemExit("A: a wrong result")
            else:

                async def worker() -> None:
                    for i in range(n // 64):
                        if await renderer.invoke("inc", i) != i + 1:
                            raise SystemExit("B: a wrong result")

                async with anyio.create_task_group() as tg:
                    for _ in range(64):
                        tg.start_soon(worker)


def _instructions(kind: str, n: int, options: list[str]) -> int:
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    out = subprocess.run(
        [*valgrind, sys.executable, __file__, "--run", kind, str(n), *options],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    found = re.search(r"Collected : ([\d,]+)", out)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["A", "B", "C", "F", "F1"], action="append")
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--large", type=int, default=12_000)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--floor", action="store_true", help="the floor, not ipcbus (A, B, C)")
    parser.add_argument("--run", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        options = {"use_uvloop": args.loop == "uvloop"}
        anyio.run(_workload, args.run[0], int(args.run[1]), args.floor, backend_options=options)
        return
    if args.floor and not set(args.kind or ["C", "B", "A"]) <= {"A", "B", "C"}:
        parser.error("--floor runs kinds A, B and C only")
    options = ["--loop", args.loop, *(["--floor"] if args.floor else [])]
    who = "the floor" if args.floor else "ipcbus"
    names = {
        "C": "one-way send + listener",
        "B": "invoke + handler, 64 in flight",
        "A": "invoke + handler, one at a time",
        "F": f"broadcast to {_FANOUT} renderers, back to back, per delivery",
        "F1": f"broadcast to {_FANOUT} renderers, one per loop turn, per delivery",
    }
    for kind in args.kind or ["C", "B", "A"]:
        small = _instructions(kind, args.small, options)
        large = _instructions(kind, args.large, options)
        per_op = (large - small) / (args.large - args.small)
        print(
            f"{kind} {names[kind]}, {who} on {args.loop}: "
            f"{per_op:,.0f} instructions per operation (both sides)"
        )


if __name__ == "__main__":
    main()
