"""Profile one contestant on one scenario: py-spy (or pyinstrument) on server and client.

    python benchmarks/profile_scenario.py --scenario B [--contestant ipcbus] [--loop asyncio]
                                 [--tool py-spy|pyinstrument] [--rate 1000] [--top 20]
                                 [--out DIR] [--quick]

With py-spy (the default) both processes run under ``py-spy record --format
raw`` (collapsed stacks, idle samples excluded); this script then prints, for
each, the functions with the most *self* samples (where the CPU really was)
and the most *total* samples (what was on the stack). With pyinstrument each
process writes its own text report into ``--out``. Scenarios A-D, and E, F
and H with their client processes, of which only the first is profiled.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import Params  # noqa: E402
from bench import RUN, Child, RunFailed  # noqa: E402


def wrap(tool: str, rate: int, out: Path, argv: list[str]) -> list[str]:
    if tool == "py-spy":
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        return [spy, "record", "--format", "raw", "--rate", str(rate), "-o", str(out), "--", *argv]
    return [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(out), *argv[1:]]


def _frame(name: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines merged."""
    func, _, where = name.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({short})" if where else func


def summarize(path: Path, top: int) -> list[str]:
    """Top functions by self and by total samples from py-spy's collapsed stacks.

    Samples of helper threads (the executor thread blocked reading stdin, which
    py-spy does not always see as idle) and of start-up imports are counted
    apart, so the percentages are of the event loop thread's work.
    """
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = threads = imports = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if frames[0].startswith(("Thread._bootstrap ", "_bootstrap (threading")):
            threads += n
            continue
        if any(f.startswith("_find_and_load (") for f in frames):
            imports += n
            continue
        samples += n
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return [f"{path.name}: no samples"]
    lines = [
        f"{path.name}: {samples} samples of the main thread (idle excluded; "
        f"left out: {imports} in start-up imports, {threads} in helper threads)",
        "  by self time:",
    ]
    lines += [f"    {n / samples:6.1%}  {f}" for f, n in own.most_common(top)]
    lines.append("  by total time (on the stack):")
    lines += [f"    {n / samples:6.1%}  {f}" for f, n in total.most_common(top)]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="B", choices=list("ABCDEFH"))
    parser.add_argument("--contestant", default="ipcbus")
    parser.add_argument("--loop", default="asyncio", choices=("asyncio", "uvloop"))
    parser.add_argument("--tool", default="py-spy", choices=("py-spy", "pyinstrument"))
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", default="", help="keep the raw profiles here")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    p = Params.make(args.quick)
    out = Path(args.out or tempfile.mkdtemp(prefix="ipcbench-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    ext = "txt"
    tag = f"{args.contestant}-{args.loop}-{args.scenario}"
    server_out = out / f"server-{tag}.{ext}"
    client_out = out / f"client-{tag}.{ext}"
    run_dir = tempfile.mkdtemp(prefix="ipcbench-", dir="/tmp")
    base = [sys.executable, RUN, args.contestant]
    server = Child(
        wrap(
            args.tool,
            args.rate,
            server_out,
            [*base, "server", "--loop", args.loop, "--dir", run_dir],
        ),
        "server",
    )
    client = None
    others: list[Child] = []
    many = args.scenario in "EFH"
    procs, renderers = (
        (p.e_procs, p.e_renderers) if args.scenario == "E" else (p.f_procs, p.f_renderers)
    )
    try:
        info = server.line(timeout=30)
        argv = [*base, "client", "--loop", args.loop, "--scenario", args.scenario]
        argv += ["--info", json.dumps(info), "--params", p.to_json()]
        if many:
            argv += ["--conns", str(renderers // procs)]
            others = [Child([*argv, "--index", str(i)], f"client {i}") for i in range(1, procs)]
            argv += ["--index", "0"]
        client = Child(wrap(args.tool, args.rate, client_out, argv), "client")
        if many:
            for c in (client, *others):
                c.line(timeout=p.timeout)  # {"connected": n}
            for c in (client, *others):
                c.go()
            for c in others:
                c.line(timeout=p.timeout + 30)
        result = client.line(timeout=p.timeout + 30)["result"]
        print(f"{tag}: {result}")
    except RunFailed as exc:
        print(f"{tag}: ERROR {exc}", file=sys.stderr)
        return 1
    finally:
        for c in others:
            c.stop(grace=5)
        if client is not None:
            client.proc.wait(30)  # let the profiler write its file
            client.stop(grace=5)
        server.stop(grace=30)
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"raw profiles: {server_out} {client_out}")
    if args.tool == "py-spy":
        for path in (server_out, client_out):
            print()
            print("\n".join(summarize(path, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
