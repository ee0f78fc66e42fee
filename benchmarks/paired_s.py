"""Scenario S, paired: blocking round trips of each client, batch by batch, alternating.

    python benchmarks/paired_s.py [--loop asyncio|uvloop] [--rounds 30] [--batch 2000]
    IPCBUS_BEFORE=<checkout>/src python benchmarks/paired_s.py   # adds ipcbus-sync-before

``bench.py``'s cells run one after the other, a few seconds each, so when this
shared machine changes pace between two cells, one column takes the change and
its neighbour does not: one run of S read 1.51x of ``mpconn`` for code that
paired runs, the same morning, put 6-15% ahead of the code before it.
Here every client stays connected to its own server (the bench's, started
through ``_run.py``: ``mpconn``'s, and ``ipcbus``'s main on the loop given)
and they take turns: one batch of sequential calls each per round, the order
reversed every other round. Each batch gives its median round trip; each round
gives the ratio of every client to ``mpconn``'s in that round; the script
prints the median over rounds of each, and in how many rounds the target of
issue 12 (within 1.2x of ``mpconn``) held.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = 1.2  # issue 12: ipcbus.sync within 1.2x of multiprocessing.connection
SERVERS = {"mpconn": "mpconn", "ipcbus-sync": "ipcbus", "ipcbus-sync-before": "ipcbus-before"}


def client(variant: str, info: dict[str, Any]) -> None:
    """A client process: connect, warm up, then one batch per line of stdin."""
    sys.path.insert(0, str(HERE))
    if variant.endswith("-before"):
        sys.path.insert(0, os.environ["IPCBUS_BEFORE"])
    with contextlib.ExitStack() as stack:
        if variant == "mpconn":
            from contestants.mpconn import _Conn

            conn = _Conn(info["address"])
            stack.callback(conn.conn.close)
            call = conn.call
        else:
            import ipcbus.sync

            ipc = stack.enter_context(ipcbus.sync.connect(info["address"], token=info["token"]))
            call = ipc.invoke
        for i in range(2_000):
            assert call("inc", i) == i + 1
        print("ready", flush=True)
        clock = time.perf_counter_ns
        for line in sys.stdin:  # until the driver closes our stdin
            lat = []
            for i in range(int(line)):
                t0 = clock()
                r = call("inc", i)
                lat.append(clock() - t0)
                if r != i + 1:
                    raise SystemExit(f"{variant}: reply {r!r} to inc({i})")
            print(statistics.median(lat) / 1e3, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--info", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args.client, json.loads(args.info))
        return 0
    variants = ["mpconn", "ipcbus-sync"]
    if os.environ.get("IPCBUS_BEFORE"):
        variants.append("ipcbus-sync-before")
    medians: dict[str, list[float]] = {v: [] for v in variants}
    procs: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory() as run_dir:
        try:
            clients = {}
            for variant in variants:
                run = [sys.executable, str(HERE / "_run.py"), SERVERS[variant], "server"]
                server = subprocess.Popen(
                    [*run, "--loop", args.loop, "--dir", run_dir],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                procs.append(server)
                assert server.stdout is not None
                info = server.stdout.readline()
                c = subprocess.Popen(
                    [sys.executable, __file__, "--client", variant, "--info", info],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                procs.append(c)
                assert c.stdout is not None and c.stdout.readline().strip() == "ready", variant
                clients[variant] = c
            for n in range(args.rounds):
                for variant in variants if n % 2 == 0 else variants[::-1]:
                    c = clients[variant]
                    assert c.stdin is not None and c.stdout is not None
                    c.stdin.write(f"{args.batch}\n")
                    c.stdin.flush()
                    medians[variant].append(float(c.stdout.readline()))
        finally:
            for p in procs:
                if p.stdin is not None:
                    p.stdin.close()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    print(
        f"S paired: main on {args.loop}, {args.rounds} rounds of {args.batch} calls per client;"
        f" load average {os.getloadavg()[0]:.2f}"
    )
    base = medians["mpconn"]
    print(f"  {'mpconn':20} median of batch medians {statistics.median(base):7.1f} us")
    for variant in variants[1:]:
        ratios = [mine / theirs for mine, theirs in zip(medians[variant], base, strict=True)]
        held = sum(r <= TARGET for r in ratios)
        print(
            f"  {variant:20} median of batch medians {statistics.median(medians[variant]):7.1f} us;"
            f" x mpconn per round: median {statistics.median(ratios):.2f},"
            f" {min(ratios):.2f}-{max(ratios):.2f}, within {TARGET}x in {held} of {len(ratios)}"
        )
    if "ipcbus-sync-before" in medians:
        ratios = [
            a / b
            for a, b in zip(medians["ipcbus-sync"], medians["ipcbus-sync-before"], strict=True)
        ]
        median = statistics.median(ratios)
        print(f"  ipcbus-sync x ipcbus-sync-before per round: median {median:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
