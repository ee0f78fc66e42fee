"""multiprocessing.connection: blocking ``Listener``/``Client`` over AF_UNIX.

No event loop: the server multiplexes its connections with
``multiprocessing.connection.wait`` (an accept thread hands it new ones), and
the client drives the scenarios itself, blocking (B keeps 64 requests in
flight on one connection; E and F multiplex 250 connections with ``wait``).
Bodies are the floor's msgspec ``[kind, id, method, arg]`` frames; the
connection adds its own length prefix.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener, wait
from typing import Any

import msgspec
from _common import (
    ERROR,
    ONEWAY,
    REPLY,
    REQUEST,
    BenchError,
    Frame,
    Params,
    Service,
    emit,
    expect,
    round_trips,
)

LOOPS = ("asyncio",)  # no loop at all; listed under the default column
_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Frame)


# ---- server ---------------------------------------------------------------------


def serve(run_dir: str, loop: str) -> None:
    path = os.path.join(run_dir, "mp.sock")
    listener = Listener(path, family="AF_UNIX", backlog=4096)
    svc = Service()
    work: dict[str, Callable[[Any], Any]] = {
        "inc": svc.inc,
        "sink": svc.sink,
        "totals": svc.totals,
        "echo": svc.echo,
    }
    conns: list[Connection] = []
    new: list[Connection] = []
    lock = threading.Lock()
    wake_r, wake_w = os.pipe()

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return
            with lock:
                new.append(conn)
            os.write(wake_w, b"x")

    threading.Thread(target=accept, daemon=True).start()
    emit({"address": path})
    stdin = sys.stdin.fileno()

    def handle(conn: Connection, f: Frame) -> None:
        if f.kind == ONEWAY:
            work[f.method](f.arg)
        elif f.method == "bcast":
            m, expected = f.arg
            if len(conns) != expected:
                conn.send_bytes(_enc.encode((ERROR, f.id, "", f"{len(conns)} clients")))
                return
            t0 = time.monotonic()
            for seq in range(m):
                tick = _enc.encode((ONEWAY, 0, "tick", seq))
                for c in conns:
                    c.send_bytes(tick)
            conn.send_bytes(_enc.encode((REPLY, f.id, "", t0)))
        else:
            conn.send_bytes(_enc.encode((REPLY, f.id, "", work[f.method](f.arg))))

    while True:
        for ready in wait([*conns, wake_r, stdin]):
            if ready == stdin:
                if not os.read(stdin, 4096):
                    listener.close()
                    return
            elif ready == wake_r:
                os.read(wake_r, 4096)
                with lock:
                    conns.extend(new)
                    new.clear()
            else:
                assert isinstance(ready, Connection)
                try:
                    while True:
                        handle(ready, _dec.decode(ready.recv_bytes()))
                        if not ready.poll():
                            break
                except (EOFError, OSError):
                    conns.remove(ready)
                    ready.close()


# ---- client ---------------------------------------------------------------------


class _Conn:
    def __init__(self, address: str) -> None:
        self.conn = Client(address, family="AF_UNIX")
        self.next_id = 0

    def request(self, method: str, arg: Any) -> int:
        self.next_id += 1
        self.conn.send_bytes(_enc.encode((REQUEST, self.next_id, method, arg)))
        return self.next_id

    def reply(self) -> Frame:
        f = _dec.decode(self.conn.recv_bytes())
        if f.kind == ERROR:
            raise BenchError(f"remote error: {f.arg}")
        return f

    def call(self, method: str, arg: Any) -> Any:
        request_id = self.request(method, arg)
        f = self.reply()
        expect(f.id, request_id, "reply id")
        return f.arg


def _a(c: _Conn, p: Params) -> dict[str, Any]:
    """Sequential round trips (``round_trips``, the loop scenario S times too)."""
    return round_trips(lambda i: c.call("inc", i), p)


def _s(c: _Conn, p: Params) -> dict[str, Any]:
    """A's round trips through the loop ipcbus-sync uses too: the two are timed alike."""
    return round_trips(lambda i: c.call("inc", i), p)


def _b_window(c: _Conn, p: Params, seconds: float) -> int:
    """Keep ``b_inflight`` requests outstanding; the request id doubles as the argument."""
    stop_at = time.perf_counter() + seconds
    outstanding = 0
    done = 0
    for _ in range(p.b_inflight):
        c.request("inc", c.next_id + 1)
        outstanding += 1
    while outstanding:
        f = c.reply()
        if f.arg != f.id + 1:
            expect(f.arg, f.id + 1, "B reply")
        outstanding -= 1
        done += 1
        if time.perf_counter() < stop_at:
            c.request("inc", c.next_id + 1)
            outstanding += 1
    return done


def _b(c: _Conn, p: Params) -> dict[str, Any]:
    warmed = _b_window(c, p, min(0.2, p.b_seconds / 4))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    done = _b_window(c, p, p.b_seconds)
    return {
        "n": done,
        "ops_total": warmed + done,
        "calls_per_s": done / (time.perf_counter() - t0),
        "client_cpu_us": (time.process_time() - cpu0) / done * 1e6,
    }


def _c(c: _Conn, p: Params) -> dict[str, Any]:
    send = c.conn.send_bytes
    for i in range(p.c_warmup):
        send(_enc.encode((ONEWAY, 0, "sink", i)))
    base = c.call("totals", None)
    expect(base, [p.c_warmup, p.c_warmup * (p.c_warmup - 1) // 2], "C warm-up totals")
    n = p.c_count
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        send(_enc.encode((ONEWAY, 0, "sink", i)))
    got = c.call("totals", None)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    expect([got[0] - base[0], got[1] - base[1]], [n, n * (n - 1) // 2], "C totals")
    return {
        "n": n,
        "ops_total": p.c_warmup + n,
        "msgs_per_s": n / elapsed,
        "client_cpu_us": cpu / n * 1e6,
    }


def _d(c: _Conn, p: Params) -> dict[str, Any]:
    from _driver import payload

    data = payload(p.d_size)
    expect(c.call("echo", data) == data, True, "D warm-up echo equals the payload")
    elapsed = 0.0
    for _ in range(p.d_reps):
        t0 = time.perf_counter()
        r = c.call("echo", data)
        elapsed += time.perf_counter() - t0
        expect(r == data, True, "D echo equals the payload")
    return {"n": p.d_reps, "mb_per_s": p.d_reps * p.d_size / elapsed / 1e6}


def _open_many(address: str, n: int) -> list[_Conn]:
    conns = []
    for i in range(n):
        c = _Conn(address)
        expect(c.call("inc", i), i + 1, "connection check reply")
        conns.append(c)
    emit({"connected": n})
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise BenchError(f"expected 'go' from the orchestrator, got {line!r}")
    return conns


def _e(address: str, p: Params, conns: int) -> dict[str, Any]:
    cs = _open_many(address, conns)
    cpu0 = time.process_time()  # from "go" on, as _driver counts it
    by_conn = {c.conn: c for c in cs}
    sent_at: dict[Connection, int] = {}
    calls: dict[Connection, int] = dict.fromkeys(by_conn, 0)
    lat: list[float] = []
    clock = time.perf_counter_ns
    deadline = time.monotonic() + p.timeout / 2
    t0 = time.monotonic()
    for c in cs:
        sent_at[c.conn] = clock()
        c.request("inc", c.next_id + 1)
    live = list(by_conn)
    while live:
        ready = wait(live, timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            raise BenchError(f"E: {len(live)} connections still waiting at the deadline")
        for conn in ready:
            assert isinstance(conn, Connection)
            c = by_conn[conn]
            f = c.reply()
            lat.append(round((clock() - sent_at[conn]) / 1e3, 1))
            expect(f.arg, f.id + 1, "E reply")
            calls[conn] += 1
            if calls[conn] < p.e_calls:
                sent_at[conn] = clock()
                c.request("inc", c.next_id + 1)
            else:
                live.remove(conn)
    t1 = time.monotonic()
    for c in cs:
        c.conn.close()
    return {"latencies_us": lat, "t0": t0, "t1": t1, "cpu_s": time.process_time() - cpu0}


def _f(address: str, p: Params, index: int, conns: int) -> dict[str, Any]:
    cs = _open_many(address, conns)
    cpu0 = time.process_time()
    by_conn = {c.conn: c for c in cs}
    got: dict[Connection, int] = dict.fromkeys(by_conn, 0)
    t0 = None
    waiting_reply = False
    if index == 0:
        cs[0].request("bcast", [p.f_messages, p.f_renderers])
        waiting_reply = True
    live = list(by_conn)
    t_last = 0.0
    deadline = time.monotonic() + p.timeout / 2
    while live or waiting_reply:
        ready = wait(list(by_conn), timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            raise BenchError(f"F: {sum(got.values())} of {conns * p.f_messages} ticks arrived")
        for conn in ready:
            assert isinstance(conn, Connection)
            f = by_conn[conn].reply()
            if f.kind == REPLY:
                t0 = f.arg
                waiting_reply = False
                continue
            expect(f.arg, got[conn], "F tick order")
            got[conn] += 1
            if got[conn] == p.f_messages:
                t_last = time.monotonic()
                live.remove(conn)
    for c in cs:
        c.conn.close()
    cpu_s = time.process_time() - cpu0
    return {"deliveries": sum(got.values()), "t_last": t_last, "t0": t0, "cpu_s": cpu_s}


def run_client(
    info: dict[str, Any], scenario: str, p: Params, index: int, conns: int
) -> dict[str, Any]:
    address = info["address"]
    if scenario == "E":
        return _e(address, p, conns)
    if scenario == "F":
        return _f(address, p, index, conns)
    single = {"A": _a, "B": _b, "C": _c, "D": _d, "S": _s}
    c = _Conn(address)
    try:
        return single[scenario](c, p)
    finally:
        c.conn.close()
