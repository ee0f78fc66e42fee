"""What links over NATS cost one replica: honest renderers connected, and a flood of asks.

    python benchmarks/nats_links.py [--renderers 300] [--flood 20000]
    python benchmarks/nats_links.py --src /path/to/other/checkout/src   # before/after

The replica runs in a child process of its own (``replica`` mode below, with
``--src`` first on its path if given) and reports its resident set: after
joining (the base), with ``--renderers`` honest renderers connected (each made
here, one NATS client each, one invoke each), and at the peak of a flood of
``--flood`` connect requests that never complete, published in one burst by a
raw nats-py client (docs/scale-out.md, "Flooding connect requests"). It also
reports how late its loop ran at worst (a 2 ms timer) during the flood. The
figures are the replica's: KiB of RSS per renderer, and the peak of the
flood (the replica keeps at most 16 x ``max_pending_handshakes`` renderers
waiting for their first message, 1,024 by default).

Needs ``pip install -e '.[nats]'`` and ``nats-server`` on the PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import msgspec
from nats_bench import Child, nats_server

import ipcbus

APP = "links"


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# ---- the replica (a child process) -------------------------------------------


async def replica(url: str) -> None:
    """Join, then answer the parent's one-word commands on stdin with JSON on stdout."""
    loop = asyncio.get_running_loop()
    late = [0.0]

    async def watch() -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.002)
            late[0] = max(late[0], time.perf_counter() - start - 0.002)

    async with ipcbus.IpcMain() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        await ipc_main.join(url, app=APP)
        watcher = asyncio.create_task(watch())
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"rss": _rss()}), flush=True)
        while line := (await reader.readline()).decode().strip():
            if line == "late":
                late[0] = 0.0
            report = {
                "rss": _rss(),
                "peak": _peak(),
                "late_ms": late[0] * 1000,
                "renderers": len(ipc_main.get_all_web_contents()),
            }
            print(json.dumps(report), flush=True)
        watcher.cancel()


class Replica(Child):
    """The replica in its child process (``Child.stop`` ends it); ``base``: its RSS once joined."""

    def __init__(self, url: str, src: str | None) -> None:
        env = dict(os.environ)
        if src:
            env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "replica", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.base = self._answer()["rss"]

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the replica ended")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str = "report") -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()


async def _ask(replica: Replica, command: str = "report") -> dict[str, Any]:
    return await asyncio.to_thread(replica.ask, command)


async def connected(url: str, replica: Replica, n: int) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        renderers = [
            await stack.enter_async_context(ipcbus.connect(url, app=APP)) for _ in range(n)
        ]
        assert [await r.invoke("ping") for r in renderers] == ["pong"] * n
        report = await _ask(replica)
        assert report["renderers"] == n, report
        return report


async def flood(url: str, replica: Replica, n: int) -> dict[str, Any]:
    import nats
    from ipcbus._nats import ConnectRequest, connect_subject

    await _ask(replica, "late")
    nc = await nats.connect(url)
    try:
        inbox = nc.new_inbox()
        answered = 0

        async def on_answer(msg: Any) -> None:
            nonlocal answered
            answered += 1

        await nc.subscribe(f"{inbox}.reply.*", cb=on_answer)
        await nc.subscribe(f"{inbox}.frames.*", cb=on_answer)
        started = time.perf_counter()
        for i in range(n):
            await nc.publish(
                connect_subject(APP),
                msgspec.msgpack.encode(ConnectRequest(f"{inbox}.frames.{i}")),
                reply=f"{inbox}.reply.{i}",
            )
        await nc.flush()
        sent = time.perf_counter() - started
        # Until the replica has answered them all (a reply, then a Goodbye for
        # each one it drops), or a second passes without news.
        last, quiet = -1, 0
        while quiet < 10:
            await asyncio.sleep(0.1)
            quiet = quiet + 1 if answered == last else 0
            last = answered
        report = await _ask(replica)
        report["sent_s"] = sent
        report["answers"] = answered
        return report
    finally:
        await nc.close()


async def main(args: argparse.Namespace, url: str) -> None:
    print(f"nats-server {url}; replica from {args.src or 'this checkout'}; {os.cpu_count()} CPUs")
    replica = Replica(url, args.src)
    try:
        report = await connected(url, replica, args.renderers)
        grown = report["rss"] - replica.base
        print(
            f"{args.renderers} renderers connected: replica RSS +{grown / 2**20:.1f} MiB,"
            f" {grown / args.renderers / 1024:.1f} KiB per renderer"
        )
    finally:
        replica.stop()
    replica = Replica(url, args.src)  # a fresh one: its peak is the flood's alone
    try:
        report = await flood(url, replica, args.flood)
        print(
            f"flood of {args.flood} connect requests (published in {report['sent_s']:.2f} s):"
            f" replica peak RSS +{(report['peak'] - replica.base) / 2**20:.1f} MiB,"
            f" +{(report['rss'] - replica.base) / 2**20:.1f} MiB after;"
            f" loop late by {report['late_ms']:.0f} ms at most;"
            f" {report['answers']} answers and Goodbyes"
        )
    finally:
        replica.stop()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "replica":
        asyncio.run(replica(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--renderers", type=int, default=300)
        parser.add_argument("--flood", type=int, default=20_000)
        parser.add_argument("--src", help="run the replica from this src directory")
        with nats_server() as nats_url:
            asyncio.run(main(parser.parse_args(), nats_url))
