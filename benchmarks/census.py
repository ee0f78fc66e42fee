"""Objects and memory per idle connection in main: the census (issue 12).

Starts an ``IpcMain`` in this process and lets child processes open idle
connections to it, so every object counted is main's. Prints, per idle
connection: objects tracked by the cycle collector (the ``gc.get_objects()``
diff), the largest contributors by type, and RSS growth. Then the renderers
all leave at once, and it prints what leaving cost per connection: main's CPU
(until every connection is closed and forgotten, ``wait_closed``; main has no
``on_disconnect`` hook, which would move that last part into a task) and the
renderers' own.

    python benchmarks/census.py [--connections 300] [--no-fastpath] [--no-watchdog]
"""

from __future__ import annotations

import argparse
import collections
import gc
import itertools
import os
import resource
import sys
import textwrap
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))

import ipcbus  # noqa: E402

CHILD = textwrap.dedent(
    """
    import sys, time, anyio, ipcbus
    from contextlib import AsyncExitStack

    async def main(address, token, n):
        async with AsyncExitStack() as stack:
            for _ in range(n):
                await stack.enter_async_context(ipcbus.connect(address, token=token))
            print("up", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)   # until main closes our stdin
            start = time.process_time()
        print(f"left {(time.process_time() - start) / n * 1e6:.1f}", flush=True)

    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    """
)


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def by_type() -> collections.Counter[str]:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


async def census(connections: int, children: int, options: dict[str, Any]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    async with ipcbus.IpcMain(max_connections=connections + 10, **options) as ipc_main:
        listener = await ipc_main.listen()
        # One warm-up connection, so that one-off imports and caches are not counted.
        async with ipcbus.connect(listener.address, token=listener.token) as r:
            await r.send("warm-up")
        per_child = connections // children
        n = per_child * children
        all_up, seen = anyio.Event(), itertools.count(1)
        ipc_main.on_connect(lambda contents: next(seen) == n and all_up.set())
        # No on_disconnect hook: with one, main ends each connection's last part
        # (forgetting it, running the hooks) in a task; without, in the read.
        gc.collect()
        before_types, before_rss = by_type(), rss_kib()
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        argv = [sys.executable, "-c", CHILD, listener.address, listener.token, str(per_child)]
        async with AsyncExitStack() as stack:
            procs = [
                await stack.enter_async_context(await anyio.open_process(argv, env=env))
                for _ in range(children)
            ]
            with anyio.fail_after(60):
                await all_up.wait()
            living = ipc_main.get_all_web_contents()
            gc.collect()
            after_types, after_rss = by_type(), rss_kib()
            start = time.process_time()
            for proc in procs:
                assert proc.stdin is not None
                await proc.stdin.aclose()
            with anyio.fail_after(60):
                for contents in living:
                    await contents.wait_closed()
            main_leave = (time.process_time() - start) / n * 1e6
            renderers_leave = [await _left(proc) for proc in procs]
        diff = after_types - before_types
        total = sum(diff.values())
        print(f"idle connections: {n}  ({options or 'defaults'})")
        print(f"objects tracked by the cycle collector per connection: {total / n:.1f}")
        print(f"RSS growth per connection: {(after_rss - before_rss) / n:.1f} KiB")
        print("largest contributors (objects per connection):")
        for name, count in diff.most_common(15):
            print(f"  {count / n:7.2f}  {name}")
        print(f"leaving, all at once: main's CPU {main_leave:.1f} us per connection")
        shown = ", ".join(f"{us:.1f}" for us in renderers_leave)
        print(f"leaving, all at once: the renderers' CPU {shown} us per connection (each child)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _left(proc: anyio.abc.Process) -> float:
    """The child's "left <us>" line: its CPU per connection for leaving them all."""
    assert proc.stdout is not None
    out = b""
    async for chunk in proc.stdout:
        out += chunk
    for line in out.decode().splitlines():
        if line.startswith("left "):
            return float(line.split()[1])
    raise SystemExit(f"a child did not say what leaving cost: {out!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument(
        "--no-watchdog", action="store_true", help="send_timeout=None, heartbeat_interval=None"
    )
    parser.add_argument("--no-fastpath", action="store_true", help="IPCBUS_NO_FASTPATH=1")
    args = parser.parse_args()
    if args.no_fastpath:
        os.environ["IPCBUS_NO_FASTPATH"] = "1"
    options: dict[str, Any] = {}
    if args.no_watchdog:
        options.update(send_timeout=None, heartbeat_interval=None)
    anyio.run(census, args.connections, args.children, options)


if __name__ == "__main__":
    main()
