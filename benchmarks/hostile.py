"""What hostile connections cost main: RSS, descriptors, and a healthy renderer's stall.

Three attacks on a main process of its own (a fresh child per scenario):

* ``announce``: 16 authenticated connections each send a header announcing a
  64 MiB frame and 64 bytes of it, then close (main's RSS while they are open,
  after they close, and after a ``gc.collect()`` in main).
* ``fds``: main runs with ``RLIMIT_NOFILE`` 1,024 and 1,100 sockets connect and
  stay idle (does the healthy renderer keep its answers; can a new renderer
  connect once the idle sockets close). ``fds-2000``: the same with
  ``max_pending_handshakes=2000``, so that the descriptors do run out.
* ``pending``: ``max_connections=64`` and 100 sockets that connect and never
  authenticate (do a renderer with the right token and ``spawn`` still get in).

The stall is the longest ``invoke`` round trip of a renderer that calls main
every 5 ms throughout the attack. Run it against another checkout with
``--src`` (its ``src`` directory): ``python benchmarks/hostile.py --src
../before/src``. Prints a Markdown table. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

MiB = 1024 * 1024
HERE = os.path.abspath(__file__)


# ---- the main process ----------------------------------------------------


async def serve(nofile: int | None, max_connections: int, pending: int | None) -> None:
    import gc

    import ipcbus

    if nofile:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    options: dict[str, Any] = {"max_pending_handshakes": pending} if pending else {}
    ipc_main = ipcbus.IpcMain(max_connections=max_connections, handshake_timeout=60.0, **options)
    ipc_main.handle("echo", lambda event, x: x)
    ipc_main.handle("gc", lambda event: gc.collect())

    @ipc_main.handle("spawn")
    async def spawn(event: Any) -> str:
        started = time.perf_counter()
        try:
            contents = await ipc_main.spawn([sys.executable, HERE, "--child"])
            assert await contents.invoke("echo", 1) == 1
            await contents.close()
        except Exception as exc:
            return f"failed: {type(exc).__name__}: {exc}"
        return f"ok in {(time.perf_counter() - started) * 1000:.0f} ms"

    async with ipc_main:
        listener = await ipc_main.listen()
        print(json.dumps({"address": listener.address, "token": listener.token}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def child() -> None:
    import ipcbus

    renderer = ipcbus.IpcRenderer()
    renderer.handle("echo", lambda event, x: x)
    async with renderer.connect():
        await renderer.wait_closed()


# ---- the attacker and the observer ---------------------------------------


class Main:
    """The main process under attack, started from this file."""

    def __init__(self, src: str | None, *options: str) -> None:
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = os.path.abspath(src)
        self.process = subprocess.Popen(
            [sys.executable, HERE, "--serve", *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=tempfile.TemporaryFile(),  # a pipe could fill up and block main
            env=env,
            text=True,
        )
        assert self.process.stdout is not None
        info = json.loads(self.process.stdout.readline())
        self.address: str = info["address"]
        self.token: str = info["token"]
        self.path = self.address.removeprefix("unix:")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        try:
            self.process.communicate(input="", timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


class Prober:
    """A healthy renderer calling main every 5 ms; the longest round trip is the stall."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer
        self.worst = 0.0
        self.calls = 0
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        try:
            while True:
                started = time.perf_counter()
                await self.renderer.invoke("echo", self.calls, timeout=30)
                self.worst = max(self.worst, time.perf_counter() - started)
                self.calls += 1
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = type(exc).__name__

    def start(self) -> None:
        self.worst, self.calls = 0.0, 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> str:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self.error:
            return f"{self.error} after {self.calls} calls"
        return f"{self.calls} calls, worst {self.worst * 1000:.0f} ms"


def raw_socket(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


async def settle(main: Main, target: int, timeout: float) -> None:
    """Wait (polling /proc) until main holds ``target`` descriptors or more, or time is up."""
    deadline = time.monotonic() + timeout
    while main.fds() < target and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def announce(src: str | None) -> dict[str, Any]:
    import msgspec

    import ipcbus
    from ipcbus._framing import append_frame
    from ipcbus._wire import PROTOCOL_VERSION, Hello

    main = Main(src)
    row: dict[str, Any] = {}
    try:
        async with ipcbus.connect(main.address, token=main.token) as renderer:
            prober = Prober(renderer)
            await renderer.invoke("gc")
            row["RSS before"] = f"{main.rss_mib():.0f} MiB"
            fds_before = main.fds()
            hello = bytearray()
            append_frame(msgspec.msgpack.Encoder(), Hello(PROTOCOL_VERSION, main.token, 0), hello)
            prober.start()
            socks = [s for _ in range(16) if (s := raw_socket(main.path)) is not None]
            for sock in socks:
                sock.sendall(bytes(hello) + (64 * MiB).to_bytes(4, "big") + b"x" * 64)
            await asyncio.sleep(1.0)
            row["RSS with 16 x 64 MiB announced"] = f"{main.rss_mib():.0f} MiB"
            row["fds"] = f"{fds_before} -> {main.fds()}"
            for sock in socks:
                sock.close()
            deadline = time.monotonic() + 10
            while main.fds() > fds_before and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            row["RSS after they close"] = f"{main.rss_mib():.0f} MiB"
            row["healthy renderer"] = await prober.stop()
            await renderer.invoke("gc")
            row["RSS after gc.collect()"] = f"{main.rss_mib():.0f} MiB"
    finally:
        row["main"] = "alive" if main.alive() else f"died ({main.process.returncode})"
        main.stop()
    return row


async def fds(src: str | None, *options: str) -> dict[str, Any]:
    import ipcbus

    main = Main(src, "--nofile", "1024", *options)
    row: dict[str, Any] = {}
    socks: list[socket.socket] = []
    try:
        async with ipcbus.connect(main.address, token=main.token) as renderer:
            prober = Prober(renderer)
            await renderer.invoke("gc")
            rss, fds_before = main.rss_mib(), main.fds()
            prober.start()
            for _ in range(1100):
                sock = raw_socket(main.path)
                if sock is not None:
                    socks.append(sock)
            await settle(main, 1024, 5)
            await asyncio.sleep(2.0)
            row["idle sockets connected"] = len(socks)
            row["fds"] = f"{fds_before} -> {main.fds() if main.alive() else '-'}"
            row["RSS"] = f"{rss:.0f} -> {main.rss_mib() if main.alive() else float('nan'):.0f} MiB"
            row["healthy renderer"] = await prober.stop()
            for sock in socks:
                sock.close()
            socks.clear()
            started = time.perf_counter()
            try:
                async with ipcbus.connect(main.address, token=main.token, timeout=10) as late:
                    await late.invoke("echo", 1)
                row["new renderer after they close"] = (
                    f"ok in {(time.perf_counter() - started) * 1000:.0f} ms"
                )
            except Exception as exc:
                row["new renderer after they close"] = f"failed: {type(exc).__name__}"
    finally:
        for sock in socks:
            sock.close()
        row["main"] = "alive" if main.alive() else f"died ({main.process.returncode})"
        main.stop()
    return row


async def pending(src: str | None) -> dict[str, Any]:
    import ipcbus

    main = Main(src, "--max-connections", "64")
    row: dict[str, Any] = {}
    socks: list[socket.socket] = []
    try:
        async with ipcbus.connect(main.address, token=main.token) as renderer:
            prober = Prober(renderer)
            rss, fds_before = main.rss_mib(), main.fds()
            prober.start()
            socks = [s for _ in range(100) if (s := raw_socket(main.path)) is not None]
            await settle(main, fds_before + 100, 5)
            await asyncio.sleep(0.5)
            row["fds"] = f"{fds_before} -> {main.fds()}"
            row["RSS"] = f"{rss:.0f} -> {main.rss_mib():.0f} MiB"
            started = time.perf_counter()
            try:
                async with ipcbus.connect(main.address, token=main.token, timeout=10) as late:
                    await late.invoke("echo", 1)
                row["renderer with the token"] = (
                    f"ok in {(time.perf_counter() - started) * 1000:.0f} ms"
                )
            except Exception as exc:
                row["renderer with the token"] = f"failed: {type(exc).__name__}: {exc}"[:90]
            row["spawn"] = (await renderer.invoke("spawn"))[:90]
            row["healthy renderer"] = await prober.stop()
    finally:
        for sock in socks:
            sock.close()
        row["main"] = "alive" if main.alive() else f"died ({main.process.returncode})"
        main.stop()
    return row


async def fds_unbudgeted(src: str | None) -> dict[str, Any]:
    """``fds`` with ``max_pending_handshakes=2000``, so the idle sockets do exhaust
    the descriptors (the default budget drops them long before)."""
    return await fds(src, "--pending", "2000")


SCENARIOS = {"announce": announce, "fds": fds, "fds-2000": fds_unbudgeted, "pending": pending}


async def orchestrate(src: str | None, only: list[str]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    for name in only:
        row = await SCENARIOS[name](src)
        print(f"\n### {name}\n\n| measure | value |\n| --- | --- |")
        for key, value in row.items():
            print(f"| {key} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", help="the src directory of the ipcbus to measure")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nofile", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--max-connections", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--pending", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.nofile, args.max_connections, args.pending))
    elif args.child:
        asyncio.run(child())
    else:
        if args.src:
            sys.path.insert(0, os.path.abspath(args.src))
        asyncio.run(orchestrate(args.src, args.only.split(",")))


if __name__ == "__main__":
    main()
