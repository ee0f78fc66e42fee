"""What every benchmark process shares: sizes, the service, framing, stats, loops.

Rules the contestants follow so that their numbers mean the same thing:

* A server serves four things: ``inc(x) -> x + 1`` (scenarios A, B, E), a
  one-way ``sink(x)`` that counts and sums (C), ``totals() -> [count, sum]``
  (the check after C), ``echo(data) -> data`` (D), and ``bcast(m, expected)``
  (F), which sends ``tick(seq)`` for ``seq`` in ``range(m)`` to every connected
  client, refuses if the count of clients is not ``expected``, and returns
  the ``time.monotonic()`` at which it started (system-wide on Linux, so the
  orchestrator can compare it with the clients' clocks).
* A client checks every reply and every count; a wrong one raises
  :class:`BenchError` and the run posts an error instead of a number.
"""

from __future__ import annotations

import json
import os
import resource
import select
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any

import msgspec

__all__ = (
    "MiB",
    "ERROR",
    "ONEWAY",
    "REPLY",
    "REQUEST",
    "BenchError",
    "Frame",
    "Params",
    "Service",
    "append_frame",
    "emit",
    "expect",
    "percentile",
    "raise_fd_limit",
    "round_trips",
    "read_go",
    "run_asyncio",
    "stdin_closed",
)

MiB = 1024 * 1024

# Frame kinds of the hand-written protocols (floor, pyzmq, multiprocessing).
REQUEST, REPLY, ERROR, ONEWAY = 0, 1, 2, 3


class Frame(msgspec.Struct, array_like=True, gc=False):
    """``[kind, id, method, arg]``: the body the hand-written protocols carry."""

    kind: int
    id: int
    method: str
    arg: Any


class BenchError(Exception):
    """A contestant gave a wrong reply or lost a message: it posts no number."""


def expect(got: Any, want: Any, what: str) -> None:
    if got != want:
        shown = got if not isinstance(got, (bytes, bytearray, memoryview)) else f"{len(got)} bytes"
        raise BenchError(f"{what}: expected {want!r:.60}, got {shown!r:.60}")


@dataclass(frozen=True)
class Params:
    """Sizes of one run; ``--quick`` shrinks them."""

    quick: bool
    a_warmup: int
    a_seconds: float
    a_min: int
    a_max: int
    b_inflight: int
    b_seconds: float
    c_count: int
    c_warmup: int
    d_size: int
    d_reps: int
    e_renderers: int
    e_procs: int
    e_calls: int
    f_renderers: int
    f_procs: int
    f_messages: int
    g_renderers: int
    g_procs: int
    g_calls: int
    g_messages: int
    g_connecting: int  # connections each G client process opens at once
    timeout: float  # a client gives up on a scenario after this many seconds
    g_timeout: float  # the same for each phase of G

    @classmethod
    def make(cls, quick: bool) -> Params:
        return cls(
            quick=quick,
            a_warmup=200,
            a_seconds=0.7 if quick else 3.0,
            a_min=200,
            a_max=50_000,
            b_inflight=64,
            b_seconds=0.7 if quick else 3.0,
            c_count=50_000 if quick else 200_000,
            c_warmup=1_000,
            d_size=16 * MiB,
            d_reps=6 if quick else 24,
            e_renderers=1_000,
            e_procs=4,
            e_calls=5 if quick else 40,
            f_renderers=1_000,
            f_procs=4,
            f_messages=20 if quick else 200,
            g_renderers=10_000,
            g_procs=8,
            g_calls=3 if quick else 10,
            g_messages=5 if quick else 20,
            # 8 x 6 = 48 handshakes at once stays under main's default
            # max_pending_handshakes (64), past which main drops the oldest.
            g_connecting=6,
            timeout=40.0 if quick else 100.0,
            g_timeout=90.0 if quick else 180.0,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Params:
        return cls(**json.loads(text))


class Service:
    """The server-side work, identical for every contestant."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def inc(self, x: int) -> int:
        return x + 1

    def sink(self, x: int) -> None:
        self.count += 1
        self.total += x

    def totals(self, _: Any = None) -> list[int]:
        return [self.count, self.total]

    def echo(self, data: bytes) -> bytes:
        return data


def append_frame(encoder: msgspec.msgpack.Encoder, body: Any, out: bytearray) -> None:
    """Append a 4-byte big-endian length and the msgpack ``body`` to ``out``."""
    start = len(out)
    encoder.encode_into(body, out, start + 4)
    out[start : start + 4] = (len(out) - start - 4).to_bytes(4, "big")


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[index])


def round_trips(call: Callable[[int], Any], p: Params) -> dict[str, Any]:
    """Sequential blocking ``call(i) -> i + 1`` round trips: median and p99 (scenario S).

    The blocking twin of the driver's scenario A: ``p.a_warmup`` calls, then
    calls for ``p.a_seconds`` (at least ``p.a_min``, at most ``p.a_max``).
    """
    for i in range(p.a_warmup):
        expect(call(i), i + 1, "warm-up reply")
    clock = time.perf_counter_ns
    deadline = clock() + int(p.a_seconds * 1e9)
    lat: list[int] = []
    i = 0
    while True:
        t0 = clock()
        r = call(i)
        t1 = clock()
        if r != i + 1:
            expect(r, i + 1, "reply")
        lat.append(t1 - t0)
        i += 1
        if len(lat) >= p.a_max or (t1 >= deadline and len(lat) >= p.a_min):
            break
    lat.sort()
    return {
        "n": len(lat),
        "median_us": percentile(lat, 0.5) / 1e3,
        "p99_us": percentile(lat, 0.99) / 1e3,
    }


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout: how children talk to the orchestrator.

    The pipe is made blocking first: an event loop (uvloop) may have left it
    non-blocking, and a long line then gets a partial write and arrives cut.
    """
    data = memoryview((json.dumps(obj) + "\n").encode())
    sys.stdout.flush()  # anything printed before goes first
    fd = sys.stdout.fileno()
    os.set_blocking(fd, True)
    # Written straight to the descriptor, until every byte is out: once a run
    # lost the end of an 80 KB line (E's latencies) as the child exited.
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:  # made non-blocking again behind our back
            select.select([], [fd], [])


def raise_fd_limit() -> None:
    """1,000 connections (10,000 in G) need more than the usual 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_asyncio(main: Callable[[], Coroutine[Any, Any, Any]], loop: str) -> Any:
    """Run ``main`` on plain asyncio or on uvloop (no anyio in between)."""
    import asyncio

    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


async def stdin_closed() -> None:
    """Return when the orchestrator closes our stdin: the signal to stop serving."""
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def read_go() -> None:
    """Wait for the orchestrator's ``go`` line (scenarios E and F)."""
    import asyncio

    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise BenchError(f"expected 'go' from the orchestrator, got {line!r}")
