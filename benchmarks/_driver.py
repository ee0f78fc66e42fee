"""The scenarios A-G, written once against a small async client interface.

A contestant module provides ``connect(info, on_tick)``, an async context
manager yielding an object with ``call``, ``send``, ``totals``, ``echo`` and
``broadcast`` (see :class:`AsyncClient`). The blocking contestant
(multiprocessing.connection) has its own driver in its module.

Every reply and every count is checked (``expect``); a mismatch raises
``BenchError`` and the run reports an error instead of a number.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from _common import BenchError, Params, emit, expect, percentile, read_go

__all__ = ("AsyncClient", "Connect", "run_scenario")


class AsyncClient(Protocol):
    async def call(self, x: int) -> int: ...
    async def send(self, x: int) -> None: ...
    async def totals(self) -> list[int]: ...
    async def echo(self, data: bytes) -> bytes: ...
    async def broadcast(self, m: int, expected: int, paced: bool = False) -> float: ...


TickCallback = Callable[[int], None]
Connect = Callable[[dict[str, Any], TickCallback | None], AbstractAsyncContextManager[AsyncClient]]


def payload(size: int) -> bytes:
    return random.Random(4).randbytes(size)


# ---- one connection ---------------------------------------------------------


async def scenario_a(c: AsyncClient, p: Params) -> dict[str, Any]:
    """Sequential invoke round trips: median and p99 latency."""
    for i in range(p.a_warmup):
        expect(await c.call(i), i + 1, "A warm-up reply")
    clock = time.perf_counter_ns
    deadline = clock() + int(p.a_seconds * 1e9)
    lat: list[int] = []
    i = 0
    while True:
        t0 = clock()
        r = await c.call(i)
        t1 = clock()
        if r != i + 1:
            expect(r, i + 1, "A reply")
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


async def scenario_b(c: AsyncClient, p: Params) -> dict[str, Any]:
    """``b_inflight`` invokes in flight at all times: calls per second."""
    done = 0

    async def worker(w: int, stop_at: float) -> None:
        nonlocal done
        x = w * 10_000_000
        while time.perf_counter() < stop_at:
            r = await c.call(x)
            if r != x + 1:
                expect(r, x + 1, "B reply")
            x += 1
            done += 1

    warm = time.perf_counter() + min(0.2, p.b_seconds / 4)
    await asyncio.gather(*(worker(w, warm) for w in range(p.b_inflight)))
    warmed = done
    done = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop_at = t0 + p.b_seconds
    await asyncio.gather(*(worker(w, stop_at) for w in range(p.b_inflight)))
    elapsed = time.perf_counter() - t0
    return {
        "n": done,
        "ops_total": warmed + done,
        "calls_per_s": done / elapsed,
        "client_cpu_us": (time.process_time() - cpu0) / done * 1e6,
    }


async def scenario_c(c: AsyncClient, p: Params) -> dict[str, Any]:
    """``c_count`` one-way sends, then a ``totals`` call: messages per second."""
    for i in range(p.c_warmup):
        await c.send(i)
    base = await c.totals()
    expect(base, [p.c_warmup, p.c_warmup * (p.c_warmup - 1) // 2], "C warm-up totals")
    n = p.c_count
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        await c.send(i)
    got = await c.totals()  # ordered after every send on the same connection
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    expect([got[0] - base[0], got[1] - base[1]], [n, n * (n - 1) // 2], "C totals")
    return {
        "n": n,
        "ops_total": p.c_warmup + n,
        "msgs_per_s": n / elapsed,
        "client_cpu_us": cpu / n * 1e6,
    }


async def scenario_d(c: AsyncClient, p: Params) -> dict[str, Any]:
    """Echo ``d_size`` bytes ``d_reps`` times: MB/s of payload (one way), 1 MB = 1e6 B."""
    data = payload(p.d_size)
    expect(bytes(await c.echo(data)) == data, True, "D warm-up echo equals the payload")
    elapsed = 0.0
    for _ in range(p.d_reps):
        t0 = time.perf_counter()
        r = await c.echo(data)
        elapsed += time.perf_counter() - t0
        expect(len(r), len(data), "D echo length")
        expect(r == data, True, "D echo equals the payload")
    return {"n": p.d_reps, "mb_per_s": p.d_reps * p.d_size / elapsed / 1e6}


# ---- many connections (E, F) ---------------------------------------------------


class _Ticks:
    """What one connection received of the broadcast; checks order and count."""

    __slots__ = ("done", "error", "expected", "next", "t_last")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.next = 0
        self.error: str | None = None
        self.t_last = 0.0
        self.done = asyncio.Event()

    def __call__(self, seq: int) -> None:
        if seq != self.next and self.error is None:
            self.error = f"tick {seq} arrived when {self.next} was due"
        self.next += 1
        if self.next == self.expected:
            self.t_last = time.monotonic()
            self.done.set()


async def _with_many(
    connect: Connect,
    info: dict[str, Any],
    n: int,
    ticks: list[_Ticks] | None,
    body: Callable[[list[AsyncClient]], Awaitable[dict[str, Any]]],
    # 4 client processes x 12 = 48 handshakes at a time: under the listen backlog and
    # under ipcbus main's max_pending_handshakes (64), past which it refuses the oldest
    at_once: int = 12,
) -> dict[str, Any]:
    """Open ``n`` connections (each held by its own task), run ``body``, close them."""
    clients: list[Any] = [None] * n
    up = 0
    all_up = asyncio.Event()
    stop = asyncio.Event()
    connecting = asyncio.Semaphore(at_once)

    async def hold(i: int) -> None:
        nonlocal up
        await connecting.acquire()
        holding = True
        try:
            async with connect(info, ticks[i] if ticks is not None else None) as c:
                expect(await c.call(i), i + 1, "connection check reply")
                connecting.release()
                holding = False
                clients[i] = c
                up += 1
                if up == n:
                    all_up.set()
                await stop.wait()
        finally:
            if holding:
                connecting.release()

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(hold(i))
        try:
            await all_up.wait()
            result = await body(clients)
        finally:
            stop.set()
    return result


async def _invokes(clients: list[AsyncClient], calls: int, what: str) -> dict[str, Any]:
    """``calls`` sequential invokes on every connection, all connections at once."""
    lat: list[int] = []
    clock = time.perf_counter_ns

    async def one(c: AsyncClient, k: int) -> None:
        for j in range(calls):
            x = k * 1000 + j
            t0 = clock()
            r = await c.call(x)
            lat.append(clock() - t0)
            if r != x + 1:
                expect(r, x + 1, f"{what} reply")

    t0 = time.monotonic()
    await asyncio.gather(*(one(c, k) for k, c in enumerate(clients)))
    t1 = time.monotonic()
    expect(len(lat), len(clients) * calls, f"{what} replies received")
    return {"latencies_us": [round(v / 1e3, 1) for v in lat], "t0": t0, "t1": t1}


async def _all_ticks(ticks: list[_Ticks], m: int, timeout: float, what: str) -> dict[str, Any]:
    """Wait until every connection has its ``m`` ticks, in order; the deliveries."""
    try:
        async with asyncio.timeout(timeout):
            for t in ticks:
                await t.done.wait()
    except TimeoutError:
        got = sum(t.next for t in ticks)
        raise BenchError(
            f"{what}: {got} of {len(ticks) * m} ticks arrived in {timeout} s"
        ) from None
    for t in ticks:
        if t.error is not None:
            raise BenchError(f"{what}: {t.error}")
        expect(t.next, m, f"{what} ticks per connection")
    return {"deliveries": sum(t.next for t in ticks), "t_last": max(t.t_last for t in ticks)}


async def scenario_e(
    connect: Connect, info: dict[str, Any], p: Params, index: int, conns: int
) -> dict[str, Any]:
    """Every connection makes ``e_calls`` sequential invokes, all connections at once."""

    async def body(clients: list[AsyncClient]) -> dict[str, Any]:
        emit({"connected": len(clients)})
        await read_go()
        cpu0 = time.process_time()
        result = await _invokes(clients, p.e_calls, "E")
        return {**result, "cpu_s": time.process_time() - cpu0}

    return await _with_many(connect, info, conns, None, body)


async def scenario_f(
    connect: Connect, info: dict[str, Any], p: Params, index: int, conns: int, paced: bool
) -> dict[str, Any]:
    """Index 0 asks the server to broadcast ``f_messages`` ticks; all count them.

    ``paced`` (scenario H): the server yields to its loop after each broadcast,
    so no two broadcasts can share a write.
    """
    ticks = [_Ticks(p.f_messages) for _ in range(conns)]

    async def body(clients: list[AsyncClient]) -> dict[str, Any]:
        emit({"connected": len(clients)})
        await read_go()
        cpu0 = time.process_time()
        t0 = None
        if index == 0:
            t0 = await clients[0].broadcast(p.f_messages, p.f_renderers, paced)
        got = await _all_ticks(ticks, p.f_messages, p.timeout / 2, "H" if paced else "F")
        return {**got, "t0": t0, "cpu_s": time.process_time() - cpu0}

    return await _with_many(connect, info, conns, ticks, body)


Refusal = Callable[[dict[str, Any]], Awaitable[str]]


async def scenario_g(
    connect: Connect,
    info: dict[str, Any],
    p: Params,
    index: int,
    conns: int,
    refusal: Refusal | None,
) -> dict[str, Any]:
    """10,000 renderers: connect, (one refused), a few invokes each, one broadcast to all.

    Three phases, each started by the orchestrator's ``go`` once every client
    process is through the previous one: (1) all connected, idle (the
    orchestrator reads main's RSS); (2) process 0 opens one connection too
    many, which main must refuse (``refusal``, if the contestant has a limit),
    while every connection makes ``g_calls`` sequential invokes; (3) process 0
    asks for a broadcast of ``g_messages`` ticks to all ``g_renderers``.
    """
    ticks = [_Ticks(p.g_messages) for _ in range(conns)]

    async def body(clients: list[AsyncClient]) -> dict[str, Any]:
        emit({"connected": len(clients)})
        await read_go()
        async with asyncio.timeout(p.g_timeout):
            # The others are already invoking while this one is refused.
            refused = await refusal(info) if index == 0 and refusal is not None else None
            invoked = await _invokes(clients, p.g_calls, "G")
            invoked["refused"] = refused
        emit({"invoked": invoked})
        await read_go()
        async with asyncio.timeout(p.g_timeout):
            t0 = None
            if index == 0:
                t0 = await clients[0].broadcast(p.g_messages, p.g_renderers)
            got = await _all_ticks(ticks, p.g_messages, p.g_timeout / 2, "G")
        return {**got, "t0": t0}

    async with asyncio.timeout(3 * p.g_timeout):  # three phases
        return await _with_many(connect, info, conns, ticks, body, at_once=p.g_connecting)


async def run_scenario(
    connect: Connect,
    info: dict[str, Any],
    scenario: str,
    p: Params,
    index: int,
    conns: int,
    refusal: Refusal | None = None,
) -> dict[str, Any]:
    """Run one scenario within ``p.timeout`` seconds (G: per phase) and return its raw result."""
    if scenario == "G":
        return await scenario_g(connect, info, p, index, conns, refusal)
    async with asyncio.timeout(p.timeout):
        if scenario in "ABCD":
            single = {"A": scenario_a, "B": scenario_b, "C": scenario_c, "D": scenario_d}
            async with connect(info, None) as c:
                return await single[scenario](c, p)
        if scenario == "E":
            return await scenario_e(connect, info, p, index, conns)
        if scenario in "FH":
            return await scenario_f(connect, info, p, index, conns, paced=scenario == "H")
    raise ValueError(f"unknown scenario {scenario!r}")
