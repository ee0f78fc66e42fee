"""One of ``bench.py``'s scenarios, paired: each contestant's cells in turns, ratio by ratio.

    python benchmarks/paired.py [--scenario E] [--loop uvloop] [--rounds 6] [--calls 150]
    python benchmarks/paired.py --scenario C --loop asyncio
    IPCBUS_BEFORE=<checkout>/src python benchmarks/paired.py \
        --contestants floor,ipcbus,ipcbus-before

E (1,000 renderers in four processes, each making sequential invokes) and C
(one-way sends) are bound by CPU on a small machine, so a change of pace of
the machine between two of ``bench.py``'s cells lands on one column and not
the other: the same code has read 0.90x to 1.02x of the floor's E calls/s
on uvloop in runs of one morning. Here the contestants run the scenario in
turns, a fresh server and fresh clients each time as in ``bench.py``
(``bench.run_one``), the order reversed every other round; each round gives
every contestant's rate divided by the first one's in that round, and the
script prints the median over rounds of those ratios beside the medians of
each metric. ``--calls`` sets E's invokes per renderer (``bench.py``: 40, a
cell of about a second, in which connecting weighs in). S has its own
paired script, ``paired_s.py``, which keeps its clients connected.

Before reading a difference between two codes as real, run the same code in
both columns (an A/A run: ``IPCBUS_BEFORE`` pointing at ``git archive HEAD
src`` unpacked elsewhere): on a 2-CPU virtual machine, 40 rounds of E read
6 % apart with identical code (docs/performance.md, "E on uvloop, looked at
again").

``--busy N`` keeps N other processes spinning on the CPU for the whole run,
so that every contestant meets the same busy machine (issue 12 asks for E's
targets "also when the machine is busy"); the p99 column then says how each
one's slowest calls fare beside the base's, round by round.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import subprocess
import sys
from collections.abc import Iterator

import bench
from _common import Params

RATE = {"B": "calls_per_s", "C": "msgs_per_s", "E": "calls_per_s", "F": "deliveries_per_s"}
RATE |= {"H": "deliveries_per_s"}
SHOWN = ("p99_us", "server_cpu_us", "client_cpu_us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(RATE), default="E")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=150, help="E: invokes per renderer")
    parser.add_argument("--contestants", default="floor,ipcbus", help="the first is the base")
    parser.add_argument("--busy", type=int, default=0, help="processes spinning meanwhile")
    args = parser.parse_args()
    with spinning(args.busy):
        run(args)


@contextlib.contextmanager
def spinning(count: int) -> Iterator[None]:
    """``count`` processes that do nothing but spin, until the block ends."""
    spin = [sys.executable, "-c", "while True: pass"]
    procs = [subprocess.Popen(spin) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> None:
    contestants = args.contestants.split(",")
    rate = RATE[args.scenario]
    params = dataclasses.replace(Params.make(False), e_calls=args.calls, timeout=300)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in contestants}
    for round_ in range(args.rounds):
        order = contestants if round_ % 2 == 0 else contestants[::-1]
        for name in order:
            metrics = bench.run_one(name, args.loop, args.scenario, params)
            runs[name].append(metrics)
            shown = ", ".join(f"{key} {value:.1f}" for key, value in sorted(metrics.items()))
            print(f"round {round_ + 1} {name}: {shown}", flush=True)
    base = contestants[0]
    keys = [rate, *(key for key in SHOWN if key in runs[base][0])]
    print(f"\n{args.scenario} on {args.loop}, {args.rounds} rounds", end="")
    print(f", {args.calls} invokes per renderer" if args.scenario == "E" else "", end="")
    print(f", {args.busy} processes spinning meanwhile" if args.busy else "")
    ratioed = [rate, *(["p99_us"] if "p99_us" in keys else [])]
    print(
        f"{'contestant':20s}"
        + "".join(f"{key:>15s}" for key in keys)
        + "".join(f"  {key + ' x ' + base:>32s}" for key in ratioed)
    )
    for name in contestants:
        medians = [statistics.median(m[key] for m in runs[name]) for key in keys]
        shown = ""
        for key in ratioed:
            ratios = [m[key] / b[key] for m, b in zip(runs[name], runs[base], strict=True)]
            median = statistics.median(ratios)
            shown += f"  {median:10.3f} (rounds: {min(ratios):.2f}-{max(ratios):.2f})"
        print(f"{name:20s}" + "".join(f"{value:15.1f}" for value in medians) + shown)


if __name__ == "__main__":
    main()
