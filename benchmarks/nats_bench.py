"""ipcbus through NATS, next to its floor (bare nats-py request/reply) and a unix socket.

One run, on this machine, ratios printed (docs/scale-out.md quotes one):

* round trip: one caller, ``invoke("inc", x)`` one at a time: median and p99;
* calls/s: 32 calls in flight from one process;
* scale-out: calls/s with 1 and 2 replica processes, for a handler that
  burns ``--work`` ms of CPU per call (so the replicas, not the caller, are
  what runs out), from 8 renderers.

Every server side runs in a child process of its own (``serve`` mode below);
the callers run here; nats-server is a third process, started on a free
loopback port. Target (issue 13): the NATS round trip within 1.3x of bare
nats-py request/reply.

Run: ``python benchmarks/nats_bench.py [--calls N] [--work MS]``
(needs ``pip install -e '.[nats]'`` and ``nats-server`` on the PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from typing import Any

import ipcbus

APP = "bench"
SUBJECT = "bench.inc"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


# ---- server sides (child processes) ------------------------------------------


async def serve(kind: str, url: str, work: float) -> None:
    if kind == "bare":
        import nats

        nc = await nats.connect(url)

        async def respond(msg: Any) -> None:
            await msg.respond(str(int(msg.data) + 1).encode())

        await nc.subscribe(SUBJECT, cb=respond)
        await nc.flush()
        print("ready", flush=True)
        await _until_stdin_closes()
        await nc.close()
        return
    ipc_main = ipcbus.IpcMain()

    @ipc_main.handle("inc")
    def inc(event: ipcbus.IpcMainInvokeEvent, x: int) -> int:
        if work:
            _busy(work)
        return x + 1

    async with ipc_main:
        if kind == "replica":
            await ipc_main.join(url, app=APP)
            print("ready", flush=True)
        else:
            listener = await ipc_main.listen()
            print(listener.address, listener.token, flush=True)
        await _until_stdin_closes()


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


class Child:
    """A server side in a child process; ``line`` is what it printed when ready."""

    def __init__(self, kind: str, url: str, work: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "serve", kind, url, str(work)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.line = self.process.stdout.readline().strip()

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---- measurements ----------------------------------------------------------------


async def round_trips(call: Callable[[int], Awaitable[int]], n: int) -> list[float]:
    for x in range(200):  # warm up
        await call(x)
    times = []
    for x in range(n):
        start = time.perf_counter()
        if await call(x) != x + 1:
            raise RuntimeError("wrong answer")
        times.append(time.perf_counter() - start)
    return sorted(times)


async def throughput(calls: list[Callable[[int], Awaitable[int]]], n: int, depth: int) -> float:
    """Calls per second with ``depth`` calls in flight per caller, ``n`` calls in all."""
    per_task = n // (len(calls) * depth)

    async def worker(call: Callable[[int], Awaitable[int]]) -> None:
        for x in range(per_task):
            if await call(x) != x + 1:
                raise RuntimeError("wrong answer")

    start = time.perf_counter()
    await asyncio.gather(*(worker(call) for call in calls for _ in range(depth)))
    return per_task * len(calls) * depth / (time.perf_counter() - start)


def stats(times: list[float]) -> tuple[float, float]:
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99)] * 1e6


async def bench_bare(url: str, n: int) -> tuple[list[float], float]:
    import nats

    child = Child("bare", url)
    nc = await nats.connect(url)
    try:

        async def call(x: int) -> int:
            msg = await nc.request(SUBJECT, str(x).encode(), timeout=5)
            return int(msg.data)

        return await round_trips(call, n), await throughput([call], n, 32)
    finally:
        await nc.close()
        child.stop()


async def bench_ipcbus(kind: str, url: str, n: int) -> tuple[list[float], float]:
    child = Child(kind, url)
    try:
        if kind == "replica":
            connecting = ipcbus.connect(url, app=APP)
        else:
            address, token = child.line.split()
            connecting = ipcbus.connect(address, token=token)
        async with connecting as renderer:

            async def call(x: int) -> int:
                result: int = await renderer.invoke("inc", x)
                return result

            return await round_trips(call, n), await throughput([call], n, 32)
    finally:
        child.stop()


async def bench_scale(url: str, replicas: int, n: int, work: float) -> float:
    children = [Child("replica", url, work) for _ in range(replicas)]
    try:
        async with AsyncExitStack() as stack:
            renderers = [
                await stack.enter_async_context(ipcbus.connect(url, app=APP)) for _ in range(8)
            ]
            calls = [functools.partial(r.invoke, "inc") for r in renderers]
            await throughput(calls, 400, 4)  # warm up
            return await throughput(calls, n, 4)
    finally:
        for child in children:
            child.stop()


@contextmanager
def nats_server() -> Iterator[str]:
    """A nats-server of its own while the block runs; yields its URL."""
    process, url = start_nats_server()
    try:
        yield url
    finally:
        process.kill()
        process.wait()


def start_nats_server() -> tuple[subprocess.Popen[bytes], str]:
    """nats-server on a free loopback port, once it accepts connections."""
    server = shutil.which("nats-server") or "/usr/sbin/nats-server"
    port = _free_port()
    process = subprocess.Popen(
        [server, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.01)
    return process, f"nats://127.0.0.1:{port}"


async def main(args: argparse.Namespace, url: str) -> None:
    n = args.calls
    print(f"nats-server {url}; {n} calls per measurement; {os.cpu_count()} CPUs; asyncio")
    rows = {
        "bare nats-py request/reply": await bench_bare(url, n),
        "ipcbus through NATS": await bench_ipcbus("replica", url, n),
        "ipcbus unix socket": await bench_ipcbus("socket", url, n),
    }
    floor_median, _ = stats(rows["bare nats-py request/reply"][0])
    floor_rate = rows["bare nats-py request/reply"][1]
    print(f"{'':30} {'median us':>10} {'p99 us':>10} {'calls/s':>10} {'rt x':>6} {'cps x':>6}")
    for name, (times, rate) in rows.items():
        median, p99 = stats(times)
        print(
            f"{name:30} {median:10.1f} {p99:10.1f} {rate:10.0f} "
            f"{median / floor_median:6.2f} {rate / floor_rate:6.2f}"
        )
    one = await bench_scale(url, 1, args.scale_calls, args.work)
    two = await bench_scale(url, 2, args.scale_calls, args.work)
    print(
        f"scale-out, handler burning {args.work} ms CPU, 8 renderers x 4 in flight: "
        f"1 replica {one:.0f} calls/s, 2 replicas {two:.0f} calls/s ({two / one:.2f}x)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--calls", type=int, default=5000)
        parser.add_argument("--scale-calls", type=int, default=3000)
        parser.add_argument("--work", type=float, default=1.0, help="ms of CPU per call")
        with nats_server() as nats_url:
            asyncio.run(main(parser.parse_args(), nats_url))
