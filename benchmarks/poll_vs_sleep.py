"""What polling for a reply saves a blocking client: the same calls, sleeping and polling.

    python benchmarks/poll_vs_sleep.py              # main on asyncio
    python benchmarks/poll_vs_sleep.py --uvloop

Five cells, in alternating passes: ``multiprocessing.connection``'s client
against its own blocking server, sleeping in ``recv`` (as scenario S's
``mpconn``) and polling (``recv`` with ``MSG_DONTWAIT`` in a loop, by hand);
and against an ``IpcMain`` in another process, a bare client that polls
(the sans-I/O ``Connection`` over a plain socket, as S's ``ipcbus-wire`` but
polling: what main costs) and ``ipcbus.sync`` with ``spin=0`` (sleeping)
and its default (polling). Each pass prints the median
round trip of every cell; the summary is the median over passes and the ratio
to ``mpconn`` sleeping. The two servers run in child processes; the client is
this one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Client
from typing import Any

from contestants.ipcbus_wire import bare_client

import ipcbus.sync

_MAIN = """
import json, sys, anyio
from ipcbus import IpcMain

async def main():
    ipc_main = IpcMain()
    ipc_main.handle("inc", lambda event, x: x + 1)
    async with ipc_main:
        listener = await ipc_main.listen(sys.argv[1])
        print(json.dumps([listener.address, listener.token]), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)

anyio.run(main, backend_options={"use_uvloop": sys.argv[2] == "uvloop"})
"""

_MPCONN = """
import sys
from multiprocessing.connection import Listener

listener = Listener(sys.argv[1], family="AF_UNIX")
print("ready", flush=True)
conn = listener.accept()
while True:
    try:
        conn.send_bytes(conn.recv_bytes())
    except EOFError:
        break
"""


def _median_us(call: Callable[[int], Any], n: int) -> float:
    for i in range(500):
        call(i)
    clock = time.perf_counter_ns
    times = []
    for i in range(n):
        start = clock()
        call(i)
        times.append(clock() - start)
    return statistics.median(times) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true", help="main on uvloop")
    parser.add_argument("--n", type=int, default=20_000, help="calls per cell and pass")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    loop = "uvloop" if args.uvloop else "asyncio"
    with tempfile.TemporaryDirectory(prefix="ipcbus-poll-") as run_dir:
        main_proc = subprocess.Popen(
            [sys.executable, "-c", _MAIN, f"unix:{run_dir}/ipc.sock", loop],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        mp_proc = subprocess.Popen(
            [sys.executable, "-c", _MPCONN, f"{run_dir}/mp.sock"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert main_proc.stdout is not None and mp_proc.stdout is not None
        address, token = json.loads(main_proc.stdout.readline())
        mp_proc.stdout.readline()
        mp = Client(f"{run_dir}/mp.sock", family="AF_UNIX")
        # The same socket, read by hand for the polling client.
        raw = socket.socket(fileno=os.dup(mp.fileno()))
        body = b"x" * 20

        def mp_sleeping(i: int) -> bytes:
            mp.send_bytes(body)
            return mp.recv_bytes()

        def mp_polling(i: int) -> bytes:
            mp.send_bytes(body)
            reply = b""
            while len(reply) < 4 + len(body):  # mpconn's 4-byte length, then the body
                try:
                    reply += raw.recv(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    pass
            return reply

        bare_sock = socket.socket(socket.AF_UNIX)
        bare_sock.connect(address.removeprefix("unix:"))
        bare = bare_client(bare_sock, token, poll=True)
        sleeping = ipcbus.sync.IpcRenderer(spin=0).connect(address, token=token)
        polling = ipcbus.sync.IpcRenderer().connect(address, token=token)
        cells: dict[str, Callable[[int], Any]] = {
            "mpconn, sleeping": mp_sleeping,
            "mpconn, polling": mp_polling,
            "bare client, polling": bare,
            "ipcbus.sync, spin=0": lambda i: sleeping.invoke("inc", i),
            "ipcbus.sync, polling": lambda i: polling.invoke("inc", i),
        }
        results: dict[str, list[float]] = {name: [] for name in cells}
        try:
            for number in range(args.passes):
                for name, call in cells.items():
                    results[name].append(_median_us(call, args.n))
                print(
                    f"pass {number + 1}: "
                    + ", ".join(f"{name} {values[-1]:.1f}" for name, values in results.items())
                )
        finally:
            bare_sock.close()
            sleeping.close()
            polling.close()
            mp.close()
            raw.close()
            for proc in (main_proc, mp_proc):
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(10)
    base = statistics.median(results["mpconn, sleeping"])
    load = os.getloadavg()[0]
    print(f"\nmedian round trip over {args.passes} passes, us (main on {loop}; load {load:.2f}):")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"  {name:<22} {value:7.1f}  {value / base:5.2f}x mpconn sleeping")


if __name__ == "__main__":
    main()
