"""Benchmark ipcbus against a pure-asyncio floor and its peers (issue 4).

    python benchmarks/bench.py [--quick] [--only A,B] [--contestants floor,ipcbus,...]
                               [--loop asyncio|uvloop|both] [--budget SECONDS] [--json PATH]

Every run starts a fresh server process and one client process (four for E
and F, 250 connections each; eight for G, 1,250 each), on this machine, over
unix sockets; the clients check every reply and count and print JSON; this
script gathers the numbers into one table with each contestant's ratio to
the floor on the same loop (S: to multiprocessing.connection), then says
which targets of issues 4 and 12 were met. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import MiB, Params, percentile  # noqa: E402

RUN = str(HERE / "_run.py")
ALL_CONTESTANTS = (
    "floor",
    "ipcbus",
    "ipcbus-async",
    "ipcbus-before",  # another checkout's src/ in $IPCBUS_BEFORE: a before/after table
    "ipcbus-sync",
    "ipcbus-sync-before",  # the same, as of $IPCBUS_BEFORE
    "ipcbus-sync-sleep",
    "ipcbus-wire",
    "loop-wire",
    "pyzmq",
    "socketio",
    "grpc",
    "mpconn",
)
DEFAULT_CONTESTANTS = (
    "floor",
    "ipcbus",
    "ipcbus-sync",
    "ipcbus-sync-sleep",
    "ipcbus-wire",
    "loop-wire",
    "pyzmq",
    "socketio",
    "grpc",
    "mpconn",
)
BOTH_LOOPS = ("asyncio", "uvloop")
LOOPS = {
    "floor": BOTH_LOOPS,
    "ipcbus": BOTH_LOOPS,
    "ipcbus-async": BOTH_LOOPS,
    "ipcbus-before": BOTH_LOOPS,
    "ipcbus-sync": BOTH_LOOPS,  # a blocking client; the loop is main's
    "ipcbus-sync-before": BOTH_LOOPS,
    "ipcbus-sync-sleep": BOTH_LOOPS,  # the same with spin=0: sleeps in recv as mpconn does
    "ipcbus-wire": BOTH_LOOPS,  # a bare client, no facade: the bound for ipcbus-sync-sleep
    "loop-wire": BOTH_LOOPS,  # mpconn's client, the least server a loop can be: a bound for main
    "pyzmq": ("asyncio",),
    "socketio": ("asyncio",),
    "grpc": ("asyncio",),
    "mpconn": ("asyncio",),  # blocking, no loop: shown in the default column
}
PEERS = ("pyzmq", "socketio", "grpc")
SCENARIOS = "ABCDEFHGS"
# Who runs what: G (10,000 renderers) is the floor's and ipcbus's; S (a blocking
# client's round trip) is the blocking clients'; ipcbus-sync(-sleep) and -wire run S only.
ONLY_FOR = {
    "G": ("floor", "ipcbus", "ipcbus-async", "ipcbus-before"),
    "S": (
        "mpconn",
        "loop-wire",
        "ipcbus-wire",
        "ipcbus-sync-sleep",
        "ipcbus-sync",
        "ipcbus-sync-before",
    ),
    # F with a yield after each broadcast: what one broadcast costs when nothing batches it
    "H": ("floor", "ipcbus", "ipcbus-async", "ipcbus-before"),
}
# The column a row is divided by ("xfloor"): S compares with multiprocessing.connection.
BASE = {"S": "mpconn"}


def takes_part(contestant: str, scenario: str) -> bool:
    if scenario in ONLY_FOR:
        return contestant in ONLY_FOR[scenario]
    return contestant not in ONLY_FOR["S"] or contestant == "mpconn"


@dataclass(frozen=True)
class Metric:
    scenario: str
    key: str
    label: str
    higher_is_better: bool


METRICS = (
    Metric("A", "median_us", "A round trip, median us", False),
    Metric("A", "p99_us", "A round trip, p99 us", False),
    Metric("B", "calls_per_s", "B 64 in flight, calls/s", True),
    Metric("B", "server_cpu_us", "B server CPU us/call", False),
    Metric("B", "client_cpu_us", "B client CPU us/call", False),
    Metric("C", "msgs_per_s", "C one-way send, msgs/s", True),
    Metric("C", "server_cpu_us", "C server CPU us/msg", False),
    Metric("C", "client_cpu_us", "C client CPU us/msg", False),
    Metric("D", "mb_per_s", "D 16 MiB echo, MB/s", True),
    Metric("D", "rss_peak_mib", "D server peak RSS, MiB", False),
    Metric("D", "rss_growth_mib", "D server RSS growth, MiB", False),
    Metric("E", "p50_us", "E 1k renderers, p50 us", False),
    Metric("E", "p99_us", "E 1k renderers, p99 us", False),
    Metric("E", "calls_per_s", "E 1k renderers, calls/s", True),
    Metric("E", "server_cpu_us", "E main CPU us/call", False),
    Metric("E", "client_cpu_us", "E renderers CPU us/call", False),
    Metric("F", "deliveries_per_s", "F broadcast, deliveries/s", True),
    Metric("F", "server_cpu_us", "F main CPU us/delivery", False),
    Metric("F", "client_cpu_us", "F renderers CPU us/delivery", False),
    Metric("H", "deliveries_per_s", "H paced broadcast, deliv/s", True),
    Metric("H", "server_cpu_us", "H main CPU us/delivery", False),
    Metric("H", "client_cpu_us", "H renderers CPU us/delivery", False),
    Metric("G", "connect_s", "G 10k renderers, connect s", False),
    Metric("G", "rss_per_conn_kib", "G main RSS/idle conn, KiB", False),
    Metric("G", "p50_us", "G 10k invokes, p50 us", False),
    Metric("G", "p99_us", "G 10k invokes, p99 us", False),
    Metric("G", "calls_per_s", "G 10k invokes, calls/s", True),
    Metric("G", "deliveries_per_s", "G broadcast, deliveries/s", True),
    Metric("S", "median_us", "S sync round trip, median us", False),
    Metric("S", "p99_us", "S sync round trip, p99 us", False),
)
# The one number per scenario that decides "ahead of" a peer.
PRIMARY = {"A": "median_us", "B": "calls_per_s", "C": "msgs_per_s", "D": "mb_per_s"}
PRIMARY |= {"E": "p50_us", "F": "deliveries_per_s", "G": "p50_us", "S": "median_us"}
PRIMARY |= {"H": "deliveries_per_s"}
HIGHER = {m.key: m.higher_is_better for m in METRICS}


# ---- child processes --------------------------------------------------------------


class RunFailed(Exception):
    pass


class Child:
    """A child process whose stdout JSON lines arrive on a queue."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=HERE,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.skipped: list[str] = []  # stdout lines that were not ours (not JSON)
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def line(self, timeout: float) -> dict[str, Any]:
        """The next JSON line; ``RunFailed`` on timeout, exit, or an error line."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise RunFailed(f"{self.name}: no answer within {timeout:.0f} s") from None
            if line is None:
                self.proc.wait(5)
                other = (
                    f"; other output ({len(self.skipped[-1])} chars): "
                    f"{self.skipped[-1][:120]!r} ... {self.skipped[-1][-120:]!r}"
                    if self.skipped
                    else ""
                )
                raise RunFailed(
                    f"{self.name} exited ({self.proc.returncode}) without an answer: "
                    f"{self.stderr_tail()}{other}"
                )
            try:
                msg: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                self.skipped.append(line)  # a library printing on stdout; not ours
                continue
            if "error" in msg:
                raise RunFailed(f"{self.name}: {msg['error']}")
            return msg

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stderr_tail(self, lines: int = 3) -> str:
        self.stderr.seek(0)
        tail = [ln for ln in self.stderr.read().splitlines() if ln.strip()][-lines:]
        return " | ".join(tail) or "(no stderr)"

    def stop(self, grace: float) -> None:
        """Close stdin (the signal to stop), then terminate, then kill."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            for sig, wait in ((None, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    self.proc.send_signal(sig)
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.stderr.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RunFailed(f"no {field} in /proc/{pid}/status")


# ---- one run ------------------------------------------------------------------------


#: What a run said besides numbers, shown under the table (G: the refusal).
NOTES: dict[tuple[str, str, str], str] = {}


def run_one(contestant: str, loop: str, scenario: str, p: Params) -> dict[str, float]:
    """Fresh server, client process(es), merged metrics; raises ``RunFailed``."""
    run_dir = tempfile.mkdtemp(prefix="ipcbench-", dir="/tmp")  # short: ipc:// paths
    py = sys.executable
    base = [py, RUN, contestant]
    argv = [*base, "server", "--loop", loop, "--dir", run_dir]
    if scenario == "G":
        argv += ["--max-connections", str(p.g_renderers)]
    server = Child(argv, f"{contestant} server")
    clients: list[Child] = []
    extra: dict[str, Any] = {}
    try:
        info = server.line(timeout=30)
        rss_ready = proc_status_kib(server.proc.pid, "VmRSS")
        cpu_ready = cpu_seconds(server.proc.pid)
        fanout = (p.f_procs, p.f_renderers)
        procs, renderers = {"E": (p.e_procs, p.e_renderers), "F": fanout, "H": fanout}.get(
            scenario, (1, 1)
        )
        if scenario == "G":
            procs, renderers = p.g_procs, p.g_renderers
        t_start = time.monotonic()
        for i in range(procs):
            argv = [*base, "client", "--loop", loop, "--scenario", scenario]
            argv += ["--info", json.dumps(info), "--params", p.to_json()]
            argv += ["--index", str(i), "--conns", str(renderers // procs)]
            clients.append(Child(argv, f"{contestant} client {i}"))
        if scenario in "EFHG":
            wait = p.g_timeout if scenario == "G" else p.timeout
            for c in clients:
                c.line(timeout=wait)  # {"connected": n}
            extra["connect_s"] = time.monotonic() - t_start
            extra["rss_idle"] = proc_status_kib(server.proc.pid, "VmRSS")
            cpu_go = cpu_seconds(server.proc.pid)
            for c in clients:
                c.go()
        if scenario == "G":  # the invokes (and the refusal), then the broadcast
            extra["invoked"] = [c.line(timeout=p.g_timeout + 15)["invoked"] for c in clients]
            for c in clients:
                c.go()
        wait = p.g_timeout if scenario == "G" else p.timeout
        results = [c.line(timeout=wait + 15)["result"] for c in clients]
        if server.proc.poll() is not None:
            raise RunFailed(f"the server died: {server.stderr_tail()}")
        hwm = proc_status_kib(server.proc.pid, "VmHWM")
        server_cpu = cpu_seconds(server.proc.pid) - cpu_ready
        if scenario in "EFH":
            extra["server_cpu_s"] = cpu_seconds(server.proc.pid) - cpu_go
    finally:
        for c in clients:
            c.stop(grace=5)
        server.stop(grace=5)
        shutil.rmtree(run_dir, ignore_errors=True)
    merged = merge(scenario, results, p, rss_ready, hwm, extra)
    if "ops_total" in results[0]:
        # Includes warm-up and the checks; clock ticks are 10 ms, hence many ops.
        merged["server_cpu_us"] = server_cpu / results[0]["ops_total"] * 1e6
    if scenario == "G":
        refused = [r["refused"] for r in extra["invoked"] if r.get("refused")]
        NOTES[(scenario, contestant, loop)] = (
            f"connection {p.g_renderers + 1:,} refused: {refused[0]}"
            if refused
            else "no connection limit: connection 10,001 not tried"
        )
    return merged


def _latencies(results: list[dict[str, Any]], expected: int, what: str) -> dict[str, float]:
    lat = sorted(v for r in results for v in r["latencies_us"])
    if len(lat) != expected:
        raise RunFailed(f"{what}: {len(lat)} replies, expected {expected}")
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return {
        "p50_us": percentile(lat, 0.5),
        "p99_us": percentile(lat, 0.99),
        "calls_per_s": len(lat) / span,
    }


def _deliveries(results: list[dict[str, Any]], expected: int, what: str) -> dict[str, float]:
    deliveries = sum(r["deliveries"] for r in results)
    if deliveries != expected:
        raise RunFailed(f"{what}: {deliveries} deliveries, expected {expected}")
    t0 = next(r["t0"] for r in results if r["t0"] is not None)
    span = max(r["t_last"] for r in results) - t0
    return {"deliveries_per_s": deliveries / span}


def _cpu(results: list[dict[str, Any]], ops: int, extra: dict[str, Any]) -> dict[str, float]:
    """CPU per operation from ``go`` to the last result: main's (from /proc, in
    10 ms ticks) and all the renderer processes' together."""
    return {
        "server_cpu_us": extra["server_cpu_s"] / ops * 1e6,
        "client_cpu_us": sum(r["cpu_s"] for r in results) / ops * 1e6,
    }


def merge(
    scenario: str,
    results: list[dict[str, Any]],
    p: Params,
    rss_ready: int,
    hwm: int,
    extra: dict[str, Any],
) -> dict[str, float]:
    if scenario == "E":
        n = p.e_renderers // p.e_procs * p.e_procs * p.e_calls
        return {**_latencies(results, n, "E"), **_cpu(results, n, extra)}
    if scenario in "FH":
        n = p.f_renderers // p.f_procs * p.f_procs * p.f_messages
        return {**_deliveries(results, n, scenario), **_cpu(results, n, extra)}
    if scenario == "G":
        n = p.g_renderers // p.g_procs * p.g_procs
        return {
            "connect_s": extra["connect_s"],
            "rss_per_conn_kib": (extra["rss_idle"] - rss_ready) / n,
            **_latencies(extra["invoked"], n * p.g_calls, "G"),
            **_deliveries(results, n * p.g_messages, "G"),
        }
    out = {k: float(v) for k, v in results[0].items() if k not in ("n", "ops_total")}
    if scenario == "D":
        out["rss_peak_mib"] = hwm / 1024
        out["rss_growth_mib"] = (hwm - rss_ready) / 1024
    return out


# ---- the table ------------------------------------------------------------------


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def _missing(got: str | None) -> str:
    if got is None:
        return "-"
    return "skip" if got.startswith("skipped") else "ERR"


def table(
    columns: list[tuple[str, str]],
    data: dict[tuple[str, str, str], dict[str, float] | str],
    scenarios: str,
) -> list[str]:
    heads = ["metric"]
    cells: list[list[str]] = []
    for contestant, loop in columns:
        short = "uv" if loop == "uvloop" else "aio"
        heads.append(f"{contestant}/{short}")
        if contestant != "floor":
            heads.append("xfloor")
    for m in METRICS:
        if m.scenario not in scenarios:
            continue
        row = [m.label]
        for contestant, loop in columns:
            got = data.get((m.scenario, contestant, loop))
            value = got.get(m.key) if isinstance(got, dict) else None
            row.append(fmt(value) if isinstance(got, dict) else _missing(got))
            if contestant != "floor":
                base = BASE.get(m.scenario, "floor")
                base_loop = loop if LOOPS[base] == BOTH_LOOPS else "asyncio"  # mpconn: no loop
                floor = data.get((m.scenario, base, base_loop)) if contestant != base else None
                fv = floor.get(m.key) if isinstance(floor, dict) else None
                row.append(f"{value / fv:.2f}" if value is not None and fv else "")
        cells.append(row)
    widths = [max(len(r[i]) for r in [heads, *cells]) for i in range(len(heads))]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(heads, widths, strict=True))
        )
    ]
    lines.append("-" * len(lines[0]))
    for r in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return lines


def value(
    data: dict[tuple[str, str, str], dict[str, float] | str],
    scenario: str,
    contestant: str,
    loop: str,
    key: str,
) -> float | None:
    got = data.get((scenario, contestant, loop))
    return got.get(key) if isinstance(got, dict) else None


def versus_floor(
    data: dict[tuple[str, str, str], dict[str, float] | str],
    check: tuple[str, str, str, float],
    bus: str,
    loop: str,
    note: str = "",
) -> str:
    """A target line: ``bus`` against the floor; ``check`` is (scenario, key, op, bound)."""
    scenario, key, op, bound = check
    mine = value(data, scenario, bus, loop, key)
    floor = value(data, scenario, "floor", loop, key)
    what = f"{scenario}: {bus}/{loop} {key} {op} {bound}x floor{note}"
    if mine is None or not floor:
        return f"{what}: n/a (missing data)"
    ratio = mine / floor
    ok = ratio <= bound if op == "<=" else ratio >= bound
    return f"{what}: {'MET' if ok else 'MISSED'} ({fmt(mine)} vs {fmt(floor)}, {ratio:.2f}x)"


def targets(
    data: dict[tuple[str, str, str], dict[str, float] | str],
    contestants: list[str],
    loops: list[str],
    scenarios: str,
    p: Params,
) -> list[str]:
    lines = []
    checks = [
        ("A", "median_us", "<=", 1.3),
        ("B", "calls_per_s", ">=", 0.5),
        ("C", "msgs_per_s", ">=", 0.5),
        ("D", "mb_per_s", ">=", 0.8),
    ]
    for bus in (c for c in contestants if c in ("ipcbus", "ipcbus-async")):
        for loop in loops:
            lines += [
                versus_floor(data, check, bus, loop) for check in checks if check[0] in scenarios
            ]
            if "D" in scenarios:
                growth = value(data, "D", bus, loop, "rss_growth_mib")
                limit = 4 * p.d_size / MiB
                what = f"D: {bus}/{loop} server peak RSS growth < 4x payload ({limit:.0f} MiB)"
                if growth is None:
                    lines.append(f"{what}: n/a (missing data)")
                else:
                    peak = value(data, "D", bus, loop, "rss_peak_mib") or 0
                    verdict = "MET" if growth < limit else "MISSED"
                    lines.append(f"{what}: {verdict} (grew {growth:.0f} MiB, peak {peak:.0f} MiB)")
        loop = "asyncio"  # the peers run on the default loop only
        if loop not in loops:
            continue
        versus = "".join(s for s in scenarios if s in "ABCDEF")  # the peers run no G, S
        for peer in (c for c in PEERS if c in contestants and versus):
            behind, missing = [], []
            for scenario in versus:
                key = PRIMARY[scenario]
                mine = value(data, scenario, bus, loop, key)
                theirs = value(data, scenario, peer, loop, key)
                if mine is None:
                    missing.append(scenario)
                    continue
                if theirs is None:
                    continue  # a broken peer posts no number; we are ahead of nothing
                if (mine < theirs) if HIGHER[key] else (mine > theirs):
                    behind.append(scenario)
            what = f"{bus}/{loop} ahead of {peer} on every scenario ({', '.join(versus)})"
            if missing:
                lines.append(f"{what}: n/a (ipcbus missing {', '.join(missing)})")
            else:
                verdict = "MET" if not behind else f"MISSED (behind on {', '.join(behind)})"
                lines.append(f"{what}: {verdict}")
    return lines + targets_12(data, contestants, loops, scenarios)


def targets_12(
    data: dict[tuple[str, str, str], dict[str, float] | str],
    contestants: list[str],
    loops: list[str],
    scenarios: str,
) -> list[str]:
    """Issue 12's targets: C, E and F against the floor, G (memory per connection)
    and S (the blocking facade)."""
    lines = []
    checks = [
        ("C", "msgs_per_s", ">=", 0.8),
        ("E", "p99_us", "<=", 1.2),
        ("E", "calls_per_s", ">=", 1.0),
        ("F", "deliveries_per_s", ">=", 1.0),
    ]
    for loop in loops if "ipcbus" in contestants else ():
        lines += [
            versus_floor(data, check, "ipcbus", loop, " (issue 12)")
            for check in checks
            if check[0] in scenarios
        ]
    if "G" in scenarios:
        for bus in (c for c in contestants if c in ("ipcbus", "ipcbus-async")):
            for loop in loops:
                kib = value(data, "G", bus, loop, "rss_per_conn_kib")
                what = f"G: {bus}/{loop} main RSS per idle connection <= 16 KiB"
                if kib is None:
                    lines.append(f"{what}: n/a (missing data)")
                else:
                    lines.append(f"{what}: {'MET' if kib <= 16 else 'MISSED'} ({kib:.1f} KiB)")
    for loop in loops if "S" in scenarios and "ipcbus-sync" in contestants else ():
        mine = value(data, "S", "ipcbus-sync", loop, "median_us")
        theirs = value(data, "S", "mpconn", "asyncio", "median_us")
        what = f"S: ipcbus-sync (main on {loop}) median round trip <= 1.2x mpconn's"
        if mine is None or not theirs:
            lines.append(f"{what}: n/a (missing data)")
        else:
            ratio = mine / theirs
            verdict = "MET" if ratio <= 1.2 else "MISSED"
            lines.append(f"{what}: {verdict} ({fmt(mine)} vs {fmt(theirs)} us, {ratio:.2f}x)")
    return lines


# ---- main -------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 3 minutes)")
    parser.add_argument("--only", default=SCENARIOS, help="scenarios, e.g. A,B (default: all)")
    parser.add_argument(
        "--contestants",
        default=",".join(DEFAULT_CONTESTANTS),
        help=f"comma-separated, from {', '.join(ALL_CONTESTANTS)}",
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop", "both"), default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds; later runs skip")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; shows medians")
    parser.add_argument("--json", help="also write the raw numbers here")
    args = parser.parse_args()

    scenarios = "".join(s for s in SCENARIOS if s in args.only.upper())
    contestants = [c.strip() for c in args.contestants.split(",") if c.strip()]
    for c in contestants:
        if c not in ALL_CONTESTANTS:
            parser.error(f"unknown contestant {c!r}; choose from {', '.join(ALL_CONTESTANTS)}")
    loop_arg = args.loop or "both"
    loops = list(BOTH_LOOPS) if loop_arg == "both" else [loop_arg]
    columns = [
        (c, lp)
        for lp in loops
        for c in contestants
        if lp in LOOPS[c] and any(takes_part(c, s) for s in scenarios)
    ]
    budget = args.budget if args.budget is not None else (300.0 if args.quick else 1200.0)
    p = Params.make(args.quick)

    load_before = os.getloadavg()
    started = time.monotonic()
    data: dict[tuple[str, str, str], dict[str, float] | str] = {}
    errors: list[str] = []
    # Repeats of one scenario go round all columns before the next, spreading noise.
    runs = [
        (s, c, lp)
        for s in scenarios
        for _ in range(args.repeat)
        for c, lp in columns
        if takes_part(c, s)
    ]
    samples: dict[tuple[str, str, str], list[dict[str, float]]] = {}
    for n, (scenario, contestant, loop) in enumerate(runs, 1):
        key = (scenario, contestant, loop)
        tag = f"[{n:2}/{len(runs)}] {scenario} {contestant}/{loop}"
        if isinstance(data.get(key), str):
            continue  # failed once: it posts no number
        if time.monotonic() - started > budget:
            if key not in samples:
                data[key] = "skipped: over the time budget"
                errors.append(
                    f"{scenario} {contestant}/{loop}: skipped (over the {budget:.0f} s budget)"
                )
            continue
        t0 = time.monotonic()
        try:
            result = run_one(contestant, loop, scenario, p)
        except RunFailed as exc:
            data[key] = str(exc)
            errors.append(f"{scenario} {contestant}/{loop}: {exc}")
            print(f"{tag}: ERROR {exc}", file=sys.stderr, flush=True)
            continue
        samples.setdefault(key, []).append(result)
        data[key] = {k: statistics.median(r[k] for r in samples[key]) for k in result}
        shown = ", ".join(f"{k} {fmt(v)}" for k, v in result.items())
        print(f"{tag}: {shown} ({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()

    out = [
        "",
        f"ipcbus benchmarks: {'quick' if args.quick else 'full'} run, {elapsed:.0f} s, "
        + (f"median of {args.repeat} runs per cell, " if args.repeat > 1 else "")
        + f"python {platform.python_version()}, {os.cpu_count()} CPUs",
        f"command: {' '.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])}",
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}",
        "columns: contestant/loop (aio = default asyncio loop, uv = uvloop); "
        "xfloor = value / floor's value on the same loop",
    ]
    if "S" in scenarios:
        out.append(
            "S: a blocking client's sequential invokes (as A); the loop is main's; "
            "xfloor = value / mpconn's (multiprocessing.connection, no loop)"
        )
    if "G" in scenarios:
        out.append(
            f"G: {p.g_renderers:,} renderers = {p.g_procs} client processes x "
            f"{p.g_renderers // p.g_procs:,} connections, main's max_connections "
            f"{p.g_renderers:,}; {p.g_calls} sequential invokes each, all at once; "
            f"then {p.g_messages} broadcasts to all; RSS/idle conn = main's VmRSS growth "
            "once all are connected / connections"
        )
    if any(s in scenarios for s in "EFH"):
        out.append(
            f"E/F/H: {p.e_renderers} renderers = {p.e_procs} client processes x "
            f"{p.e_renderers // p.e_procs} connections; E: {p.e_calls} sequential invokes each, "
            f"all at once; F: {p.f_messages} broadcasts, back to back (a burst); "
            f"H: the same, with a yield to the loop after each"
        )
    if any(s in scenarios for s in "ABCD"):
        out.append(
            f"sizes: A >= {p.a_seconds} s sequential, B {p.b_inflight} in flight {p.b_seconds} s, "
            f"C {p.c_count:,} sends, D {p.d_size // MiB} MiB x {p.d_reps}; "
            "D MB = 1e6 bytes of payload one way; RSS growth = server VmHWM - VmRSS when ready"
        )
    out.append("")
    out += table(columns, data, scenarios)
    notes = [f"{s} {c}/{lp}: {note}" for (s, c, lp), note in NOTES.items()]
    if notes:
        out.append("")
        out += notes
    out.append("")
    out.append("targets (issues 4 and 12):")
    out += ["  " + t for t in targets(data, contestants, loops, scenarios, p)]
    if errors:
        out.append("")
        out.append("errors (these post no number):")
        out += ["  " + e for e in errors]
    print("\n".join(out))
    if args.json:
        raw = {f"{s}/{c}/{lp}": v for (s, c, lp), v in data.items()}
        Path(args.json).write_text(json.dumps({"params": p.__dict__, "results": raw}, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
