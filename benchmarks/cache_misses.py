"""Cache misses per call in scenario E's shape, counted by cachegrind: what a busy machine charges.

    python benchmarks/cache_misses.py                      # the renderers' side, floor and ipcbus
    python benchmarks/cache_misses.py --side main          # main's side
    python benchmarks/cache_misses.py --contestants ipcbus --ll 1048576,16,64

E's client process holds 250 connections and makes each one's invokes in
turn, so between two calls on one connection it touches 249 others: the
objects a call touches are cold again by its next call whenever the working
set outgrows the cache. On a 2-CPU machine running main and four client
processes, every switch between them also evicts what the last one held. So
the cost that grows with load is per object touched, not per instruction:
ipcbus's renderers made fewer instructions per call than the floor's
(``instructions.py``) and still spent more CPU per call in E.

This runs one contestant's ``_run.py`` server and one client process of 250
connections (``bench.py``'s code), the side named by ``--side`` under
``valgrind --tool=cachegrind --cache-sim=yes`` with a small last-level
cache (``--ll``, 512 KiB by default: smaller than the working set, as a
loaded machine's share is), for 10 and for 40 invokes per connection, and
prints the difference divided by the difference in calls: instructions
(``Ir``), data reads and writes (``Dr``, ``Dw``), and their misses in the
first-level (``D1mr``, ``D1mw``) and last-level (``DLmr``, ``DLmw``) caches.
A cycle collection falling in one run and not the other moves a figure by a
few misses: run it twice. Needs valgrind (``apt-get install valgrind``);
about a minute per contestant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import Params

HERE = Path(__file__).resolve().parent
RUN = str(HERE / "_run.py")
CONNECTIONS = 250  # one of E's four client processes
SHOWN = ("Ir", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw")


def _child(argv: list[str]) -> subprocess.Popen[str]:
    """A ``_run.py`` process, spoken to in lines on its stdin and stdout."""
    pipe = subprocess.PIPE
    return subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=subprocess.DEVNULL, text=True)


def _counts(contestant: str, side: str, calls: int, ll: str, out: str) -> dict[str, int]:
    """Cachegrind's totals for the ``side`` process of one run of ``calls`` per connection."""
    grind = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=yes",
        "--D1=32768,8,64",
        f"--LL={ll}",
        f"--cachegrind-out-file={out}",
    ]
    with tempfile.TemporaryDirectory(prefix="ipcbench-", dir="/tmp") as run_dir:
        server_argv = [sys.executable, RUN, contestant, "server", "--loop", "uvloop"]
        server_argv += ["--dir", run_dir]
        if side == "main":
            server_argv = grind + server_argv
        server = _child(server_argv)
        try:
            assert server.stdout is not None and server.stdin is not None
            info = json.loads(server.stdout.readline())
            params = dataclasses.replace(
                Params.make(False), e_calls=calls, e_procs=1, e_renderers=CONNECTIONS
            )
            client_argv = [sys.executable, RUN, contestant, "client", "--loop", "uvloop"]
            client_argv += ["--scenario", "E", "--info", json.dumps(info)]
            client_argv += ["--params", params.to_json(), "--index", "0"]
            client_argv += ["--conns", str(CONNECTIONS)]
            if side == "renderers":
                client_argv = grind + client_argv
            client = _child(client_argv)
            assert client.stdout is not None and client.stdin is not None
            line = client.stdout.readline()
            if "connected" not in line:
                raise SystemExit(f"{contestant}: the client did not connect: {line!r}")
            client.stdin.write("go\n")
            client.stdin.flush()
            line = client.stdout.readline()
            if "result" not in line:
                raise SystemExit(f"{contestant}: the client failed: {line[:300]!r}")
            client.stdin.close()
            client.wait(timeout=600)
        finally:
            if server.stdin is not None:
                server.stdin.close()  # the server serves until its stdin closes
            server.wait(timeout=600)
    events: list[str] = []
    totals: list[int] = []
    with open(out) as lines:
        for line in lines:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:"):
                totals = [int(v) for v in line.split()[1:]]
    return dict(zip(events, totals, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("renderers", "main"), default="renderers")
    parser.add_argument("--contestants", default="floor,ipcbus")
    parser.add_argument("--ll", default="524288,8,64", help="last-level cache: size,ways,line")
    args = parser.parse_args()
    print(f"per call, on the {args.side} side: {CONNECTIONS} connections, LL {args.ll}")
    print(f"{'contestant':12s}" + "".join(f"{key:>9s}" for key in SHOWN))
    with tempfile.TemporaryDirectory(prefix="cachegrind-") as scratch:
        for contestant in args.contestants.split(","):
            few = _counts(contestant, args.side, 10, args.ll, f"{scratch}/few.out")
            many = _counts(contestant, args.side, 40, args.ll, f"{scratch}/many.out")
            calls = CONNECTIONS * (40 - 10)
            shown = "".join(f"{(many[key] - few[key]) / calls:9.0f}" for key in SHOWN)
            print(f"{contestant:12s}" + shown, flush=True)


if __name__ == "__main__":
    main()
