"""Soak test: many renderers doing mixed calls while some are SIGKILLed and restarted.

    python benchmarks/soak.py --renderers 200 --duration 60 --kill 20

One main process spawns ``--renderers`` renderer processes (this same file,
run with ``--child``), each connected through the socket ``IpcMain.spawn``
hands it. For ``--duration`` seconds every renderer calls main at about
``--rate`` calls per second (invoke, send_sync, send, a slow invoke, an invoke
that raises, a 100 kB payload), and main calls random renderers back from
``--main-callers`` tasks. Meanwhile ``--kill`` renderers, picked at random
times, are SIGKILLed and replaced by fresh ones.

Every call ends in one of:

* completed: the right answer (or, for the handler that raises, RemoteError);
* failed with a clear error: an ``IpcError`` (ConnectionClosedError when its
  renderer was killed under it);
* lost: neither, within ``--call-timeout`` seconds. Must be 0.

Renderers report their counts to main every second and once more when told
to stop; a killed renderer's calls since its last report die with it (its
caller is gone: nobody is left waiting). It prints main's RSS and open file
descriptors before, during and after, and exits non-zero if a call was lost,
a result was wrong, an unexpected exception escaped, a kill was not reported
as "killed" with exit code -9, or file descriptors grew. Bounded: it stops by
itself; loopback only (unix sockets from ``spawn``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import random
import signal
import sys
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio

import ipcbus

MiB = 1024 * 1024
THIS_FILE = os.path.abspath(__file__)


# ---- measuring main ---------------------------------------------------------


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:
    _libc = None


def trimmed_rss_mib() -> float:
    """RSS after glibc hands freed heap pages back (malloc_trim).

    Freed memory the allocator keeps for reuse is not a leak; trimming first
    tells growth of live memory from fragmentation.
    """
    if _libc is not None:
        _libc.malloc_trim(0)
    return rss_mib()


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM; psutil has no better)."""
    return _status_kib("VmHWM") / 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_children() -> list[int]:
    pids: list[int] = []
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{task}/children") as children:
                pids += [int(p) for p in children.read().split()]
        except OSError:
            continue
    return pids


# ---- one call, counted --------------------------------------------------------


async def counted(counts: Counter[str], timeout: float, call: Any, expect: Any) -> str:
    """Await ``call`` and put its outcome in ``counts``; return that outcome."""
    try:
        with anyio.fail_after(timeout):
            result = await call
    except TimeoutError:
        outcome = "lost"
    except ipcbus.RemoteError as exc:
        outcome = "completed" if expect is ipcbus.RemoteError else f"failed:{type(exc).__name__}"
    except ipcbus.IpcError as exc:
        outcome = f"failed:{type(exc).__name__}"
    except Exception as exc:
        outcome = f"unexpected:{type(exc).__name__}: {exc}"
    else:
        # The call that should have raised RemoteError did not: wrong as well.
        outcome = "completed" if expect is not ipcbus.RemoteError and result == expect else "wrong"
    counts[outcome] += 1
    return outcome


# ---- the renderer child -------------------------------------------------------


async def child(rate: float, call_timeout: float) -> None:
    rng = random.Random(os.getpid())
    renderer = ipcbus.IpcRenderer()
    stop = anyio.Event()
    counts: Counter[str] = Counter()
    go = anyio.Event()
    renderer.on("stop", lambda event: stop.set())
    renderer.on("go", lambda event: go.set())
    renderer.handle("echo", lambda event, *args: list(args))

    @renderer.handle("slow")
    async def slow(event: ipcbus.IpcRendererEvent, ms: int) -> int:
        await anyio.sleep(ms / 1000)
        return ms

    async def one_call() -> None:
        kind = rng.random()
        if kind < 0.3:
            a, b = rng.randrange(10**6), rng.randrange(10**6)
            await counted(counts, call_timeout, renderer.invoke("add", a, b), a + b)
        elif kind < 0.5:
            x = rng.random()
            await counted(counts, call_timeout, renderer.send_sync("sync", x), x)
        elif kind < 0.7:
            await counted(counts, call_timeout, renderer.send("note", rng.random()), None)
        elif kind < 0.85:
            ms = rng.randrange(50)
            await counted(counts, call_timeout, renderer.invoke("slow", ms), ms)
        elif kind < 0.95:
            await counted(counts, call_timeout, renderer.invoke("boom"), ipcbus.RemoteError)
        else:
            blob = rng.randbytes(100_000)
            await counted(counts, call_timeout, renderer.invoke("size", blob), len(blob))

    async with renderer.connect():
        async with anyio.create_task_group() as tg:

            async def report() -> None:
                while True:
                    await anyio.sleep(1)
                    await renderer.send("stats", dict(counts))

            tg.start_soon(report)
            await go.wait()  # main says go once every renderer is up
            while not stop.is_set():
                await one_call()
                with anyio.move_on_after(rng.expovariate(rate)):
                    await stop.wait()
            tg.cancel_scope.cancel()
        await renderer.invoke("final", dict(counts), timeout=call_timeout)


# ---- main ---------------------------------------------------------------------


@dataclass
class Soak:
    args: argparse.Namespace
    ipc_main: ipcbus.IpcMain = field(default_factory=ipcbus.IpcMain)
    rng: random.Random = field(default_factory=random.Random)
    live: dict[int, ipcbus.WebContents] = field(default_factory=dict)
    reports: dict[int, dict[str, int]] = field(default_factory=dict)
    finals: set[int] = field(default_factory=set)
    main_counts: Counter[str] = field(default_factory=Counter)
    killed_at: dict[int, float] = field(default_factory=dict)
    kill_to_failure: list[float] = field(default_factory=list)
    bad_kills: list[str] = field(default_factory=list)
    all_final: anyio.Event = field(default_factory=anyio.Event)
    stopping: bool = False
    max_lag: float = 0.0
    kills: int = 0
    restarts: int = 0

    def serve(self) -> None:
        main = self.ipc_main
        main.handle("add", lambda event, a, b: a + b)
        main.handle("size", lambda event, blob: len(blob))
        main.on("note", lambda event, x: None)

        @main.on("sync")
        def sync(event: ipcbus.IpcMainEvent, x: float) -> None:
            event.return_value = x

        @main.handle("slow")
        async def slow(event: ipcbus.IpcMainInvokeEvent, ms: int) -> int:
            await anyio.sleep(ms / 1000)
            return ms

        @main.handle("boom")
        def boom(event: ipcbus.IpcMainInvokeEvent) -> None:
            raise ValueError("boom, on purpose")

        @main.on("stats")
        def stats(event: ipcbus.IpcMainEvent, counts: dict[str, int]) -> None:
            if event.sender.id not in self.finals:
                self.reports[event.sender.id] = counts

        @main.handle("final")
        def final(event: ipcbus.IpcMainInvokeEvent, counts: dict[str, int]) -> None:
            self.reports[event.sender.id] = counts
            self.finals.add(event.sender.id)
            if self.live.keys() <= self.finals:
                self.all_final.set()

    async def spawn_one(self) -> ipcbus.WebContents:
        contents = await self.ipc_main.spawn(
            [
                sys.executable,
                THIS_FILE,
                "--child",
                "--rate",
                str(self.args.rate),
                "--call-timeout",
                str(self.args.call_timeout),
            ]
        )
        self.live[contents.id] = contents
        return contents

    async def spawn_many(self, count: int) -> None:
        limiter = anyio.CapacityLimiter(8)

        async def one() -> None:
            async with limiter:
                await self.spawn_one()

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)

    async def main_caller(self) -> None:
        """Call random renderers from main: they may die under the call."""
        while not self.stopping:
            contents = self.rng.choice(list(self.live.values()))
            ms = self.rng.randrange(50)
            expect: object
            if self.rng.random() < 0.5:
                call, expect = contents.invoke("slow", ms), ms
            else:
                call, expect = contents.invoke("echo", ms, "x"), [ms, "x"]
            outcome = await counted(self.main_counts, self.args.call_timeout, call, expect)
            if outcome.startswith("failed") and contents.id in self.killed_at:
                self.kill_to_failure.append(anyio.current_time() - self.killed_at[contents.id])
            await anyio.sleep(self.rng.expovariate(self.args.rate))

    async def doomed_call(self, victim: ipcbus.WebContents) -> None:
        outcome = await counted(
            self.main_counts, self.args.call_timeout, victim.invoke("slow", 10_000), 10_000
        )
        if outcome.startswith("failed"):
            self.kill_to_failure.append(anyio.current_time() - self.killed_at[victim.id])

    async def lag_monitor(self) -> None:
        """How late main's event loop runs a task: CPU starvation shows here."""
        while True:
            before = anyio.current_time()
            await anyio.sleep(0.05)
            self.max_lag = max(self.max_lag, anyio.current_time() - before - 0.05)

    async def killer(self, started: float) -> None:
        duration = self.args.duration
        moments = sorted(self.rng.uniform(0.05, 0.9) * duration for _ in range(self.args.kill))
        for moment in moments:
            await anyio.sleep_until(started + moment)
            victim = self.rng.choice(list(self.live.values()))
            del self.live[victim.id]
            async with anyio.create_task_group() as tg:
                # A call main is sure to be waiting on when the renderer dies.
                tg.start_soon(self.doomed_call, victim)
                await anyio.sleep(0.05)  # let the request reach the renderer
                self.killed_at[victim.id] = anyio.current_time()
                os.kill(victim.process_id, signal.SIGKILL)
                self.kills += 1
                with anyio.fail_after(10):
                    await victim.wait_closed()
            details = victim.disconnect_details
            if details is None or details.reason != "killed" or details.exit_code != -9:
                self.bad_kills.append(f"renderer {victim.id}: {details}")
            await (await self.spawn_one()).send("go")
            self.restarts += 1


def _sum(reports: dict[int, dict[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for counts in reports.values():
        total.update(counts)
    return total


def _split(counts: Counter[str]) -> tuple[int, int, int, int, Counter[str]]:
    completed = counts["completed"]
    lost = counts["lost"]
    wrong = counts["wrong"] + sum(n for k, n in counts.items() if k.startswith("unexpected"))
    failures = Counter({k.split(":", 1)[1]: n for k, n in counts.items() if k.startswith("failed")})
    return completed, sum(failures.values()), lost, wrong, failures


async def run(args: argparse.Namespace) -> int:
    soak = Soak(args, rng=random.Random(args.seed))
    soak.serve()
    print(
        f"soak: {args.renderers} renderers (one process each), {args.duration:g} s, "
        f"{args.kill} killed and restarted, ~{args.rate:g} calls/s per renderer, "
        f"{args.main_callers} main-side callers, seed {args.seed}",
        flush=True,
    )
    async with soak.ipc_main:
        fds_before, rss_before = open_fds(), rss_mib()
        print(f"main before: rss {rss_before:.1f} MiB, open fds {fds_before}", flush=True)
        began = time.monotonic()
        await soak.spawn_many(args.renderers)
        print(f"spawned {args.renderers} renderers in {time.monotonic() - began:.1f} s", flush=True)
        fds_peak = open_fds()
        await soak.ipc_main.broadcast("go")
        samples: list[tuple[float, float, float, int, int, int]] = []
        async with anyio.create_task_group() as tg:
            started = anyio.current_time()
            for _ in range(args.main_callers):
                tg.start_soon(soak.main_caller)
            tg.start_soon(soak.killer, started)

            async def sample() -> None:
                nonlocal fds_peak
                while True:
                    elapsed = anyio.current_time() - started
                    fds = open_fds()
                    fds_peak = max(fds_peak, fds)
                    calls = sum(_sum(soak.reports).values()) + sum(soak.main_counts.values())
                    samples.append(
                        (
                            elapsed,
                            rss_mib(),
                            trimmed_rss_mib(),
                            sys.getallocatedblocks(),
                            fds,
                            calls,
                        )
                    )
                    await anyio.sleep(args.duration / 6)

            tg.start_soon(sample)
            tg.start_soon(soak.lag_monitor)
            if args.tracemalloc:
                await anyio.sleep(args.duration / 6)
                tracemalloc.start(8)
                baseline = tracemalloc.take_snapshot()
                await anyio.sleep_until(started + args.duration)
                growth = tracemalloc.take_snapshot().compare_to(baseline, "traceback")
                tracemalloc.stop()
                print(f"tracemalloc: top growth after t={args.duration / 6:.0f} s", flush=True)
                for stat in growth[:8]:
                    print(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
                    for line in stat.traceback.format()[-6:]:
                        print(f"      {line}")
            else:
                await anyio.sleep(args.duration)
            calls = sum(_sum(soak.reports).values()) + sum(soak.main_counts.values())
            elapsed = anyio.current_time() - started
            rss = rss_mib()
            samples.append(
                (elapsed, rss, trimmed_rss_mib(), sys.getallocatedblocks(), open_fds(), calls)
            )
            soak.stopping = True
            tg.cancel_scope.cancel()
        print("  time     rss  rss after malloc_trim  python blocks   fds  calls so far")
        for elapsed, rss, trimmed, blocks, fds, calls in samples:
            print(
                f"  {elapsed:4.0f} s {rss:5.1f} MiB {trimmed:13.1f} MiB "
                f"{blocks:14d} {fds:5d} {calls:13d}",
                flush=True,
            )
        await soak.ipc_main.broadcast("stop")
        with anyio.move_on_after(args.call_timeout + 5):
            await soak.all_final.wait()
        missing_finals = len(soak.live.keys() - soak.finals)
    fds_after, rss_after = open_fds(), rss_mib()
    children_left = live_children()
    # Renderers still alive at the end exit by themselves once main closes.
    bad_exits = [
        f"renderer {contents.id}: {contents.disconnect_details}"
        for contents in soak.live.values()
        if contents.disconnect_details is None
        or (contents.disconnect_details.reason, contents.disconnect_details.exit_code)
        != ("clean-exit", 0)
    ]

    r_completed, r_failed, r_lost, r_wrong, r_failures = _split(_sum(soak.reports))
    m_completed, m_failed, m_lost, m_wrong, m_failures = _split(soak.main_counts)
    worst = max(soak.kill_to_failure, default=0.0)
    median = sorted(soak.kill_to_failure)[len(soak.kill_to_failure) // 2] if soak.kills else 0.0
    print(
        f"kills: {soak.kills}, restarts: {soak.restarts}, reported as killed with exit code -9: "
        f"{soak.kills - len(soak.bad_kills)}/{soak.kills}"
    )
    for bad in soak.bad_kills:
        print(f"  BAD KILL REPORT: {bad}")
    print(
        f"pending main-side calls on a killed renderer: {len(soak.kill_to_failure)}, "
        f"failed with ConnectionClosedError {median:.3f} s (median) / {worst:.3f} s (max) "
        f"after the SIGKILL; main's event loop ran up to {soak.max_lag:.3f} s late"
    )
    print(
        f"calls completed:                {r_completed + m_completed:8d}  "
        f"(renderer->main {r_completed}, main->renderer {m_completed})"
    )
    failures = r_failures + m_failures
    print(f"calls failed with a clear error:{r_failed + m_failed:8d}  {dict(failures)}")
    print(f"calls lost:                     {r_lost + m_lost:8d}")
    print(f"wrong results / unexpected:     {r_wrong + m_wrong:8d}")
    print(f"renderers that did not send their final report: {missing_finals}")
    print(f"renderers not reported as clean-exit with code 0 at shutdown: {len(bad_exits)}")
    for bad in bad_exits[:5]:
        print(f"  {bad}")
    print(
        f"main peak RSS (VmHWM): {peak_rss_mib():.1f} MiB; rss before {rss_before:.1f} MiB, "
        f"after {rss_after:.1f} MiB"
    )
    print(
        f"main open fds: before {fds_before}, peak {fds_peak} "
        f"(with {args.renderers} renderers), after {fds_after}"
    )
    print(f"child processes left: {len(children_left)}")
    # Live memory from the first sample after warm-up (t > 0) to the last one.
    first, last = samples[1] if len(samples) > 2 else samples[0], samples[-1]
    trimmed_growth = last[2] - first[2]
    blocks_growth = (last[3] - first[3]) / first[3]
    if args.tracemalloc:
        print("(--tracemalloc: its own memory is in these figures; growth is not judged)")
    print(
        f"live memory growth from t={first[0]:.0f} s to t={last[0]:.0f} s: "
        f"rss after malloc_trim {trimmed_growth:+.1f} MiB, python blocks {blocks_growth:+.1%}"
    )
    ok = (
        r_lost + m_lost == 0
        and r_wrong + m_wrong == 0
        and not soak.bad_kills
        and fds_after <= fds_before
        and not children_left
        and missing_finals == 0
        and not bad_exits
        and worst < 1.0
        and (args.tracemalloc or (trimmed_growth < 5.0 and blocks_growth < 0.05))
    )
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renderers", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of calls")
    parser.add_argument("--kill", type=int, default=20, help="renderers to SIGKILL and restart")
    parser.add_argument("--rate", type=float, default=5.0, help="calls/s per renderer")
    parser.add_argument("--main-callers", type=int, default=20)
    parser.add_argument("--call-timeout", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="report main's allocation growth (slower)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        anyio.run(child, args.rate, args.call_timeout)
        return
    sys.exit(anyio.run(run, args))


if __name__ == "__main__":
    main()
