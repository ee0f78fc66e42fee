"""A blocking call polls the socket for its reply before it sleeps (``ipcbus._spin``).

Main runs here; the blocking renderers are child processes (polling is off
when main is in the caller's own process), and report what their link's
``Spin`` saw through an ``invoke``.
"""

from __future__ import annotations

import dis
import os
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import anyio
import pytest

import ipcbus
import ipcbus.sync
from ipcbus._blockio import poll_recv
from ipcbus._spin import peer_is_this_process

from .helpers import running_main, spawn_script


async def _run(tmp_path: Path, source: str, **handlers: Any) -> list[Any]:
    """Spawn ``source`` as a renderer of a main with ``inc``, ``sleep``, ``pushes``
    and ``handlers``; return the arguments of its ``report`` invoke."""
    report: list[Any] = []
    with anyio.fail_after(60):
        async with running_main() as ipc_main:
            ipc_main.handle("inc", lambda event, i: i + 1)

            @ipc_main.handle("sleep")
            async def sleep(event: ipcbus.IpcMainInvokeEvent, seconds: float) -> str:
                await anyio.sleep(seconds)
                return "slept"

            @ipc_main.handle("pushes")
            async def pushes(event: ipcbus.IpcMainInvokeEvent, n: int) -> str:
                for i in range(n):
                    await event.sender.send("push", i)
                return "done"

            ipc_main.handle("report", lambda event, *args: report.extend(args))
            for channel, fn in handlers.items():
                ipc_main.handle(channel, fn)
            contents = await spawn_script(ipc_main, tmp_path, source)
            await contents.wait_closed()
            details = contents.disconnect_details
            assert details is not None and details.exit_code == 0, details
    return report


POLLING = """
    import ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer(spin=0.05)
    with ipc.connect():
        got = [ipc.invoke("inc", i) for i in range(200)]
        spin = ipc._link.spin
        ipc.invoke("report", got == list(range(1, 201)), spin.limit, spin.hits)
"""


async def test_a_call_to_main_in_another_process_polls_for_its_reply(tmp_path: Path) -> None:
    """Each reply is read by polling (a non-blocking read), not by a read that slept."""
    right, limit, hits = await _run(tmp_path, POLLING)
    assert right
    assert limit == 50_000_000  # ns
    # 200 replies, each within 50 ms of its request on any machine that runs the suite
    assert hits >= 150, hits


SLEEPING = """
    import ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer(spin=0)
    with ipc.connect():
        got = [ipc.invoke("inc", i) for i in range(50)]
        spin = ipc._link.spin
        ipc.invoke("report", got == list(range(1, 51)), spin.limit, spin.hits, spin.misses)
"""


async def test_spin_zero_never_polls(tmp_path: Path) -> None:
    assert await _run(tmp_path, SLEEPING) == [True, 0, 0, 0]


async def test_no_polling_when_main_is_in_the_same_process() -> None:
    """The caller would take back the GIL that main's loop waits for between polls."""
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("inc", lambda event, i: i + 1)
            listener = await ipc_main.listen()

            def client() -> tuple[bool, int, int, int]:
                with ipcbus.sync.connect(listener.address, token=listener.token) as ipc:
                    got = [ipc.invoke("inc", i) for i in range(20)]
                    link = ipc._link
                    assert link is not None
                    assert peer_is_this_process(link.sock)
                    spin = link.spin
                    return got == list(range(1, 21)), spin.limit, spin.hits, spin.misses

            assert await anyio.to_thread.run_sync(client) == (True, 0, 0, 0)


def test_a_peer_in_another_process_is_told_apart() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert peer_is_this_process(a)
    with socket.socket() as tcp:  # not a unix socket: cannot be told, so not ours
        assert not peer_is_this_process(tcp)


ADAPTING = """
    import ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer(spin=0.005)
    with ipc.connect():
        spin = ipc._link.spin
        for _ in range(5):
            assert ipc.invoke("sleep", 0.05) == "slept"
        after_slow = [spin.hits, spin.misses]
        for i in range(200):
            assert ipc.invoke("inc", i) == i + 1
        ipc.invoke("report", after_slow, [spin.hits, spin.misses])
"""


async def test_slow_replies_stop_the_polling_and_quick_ones_start_it_again(
    tmp_path: Path,
) -> None:
    """Only the first slow call polls (in vain): the running mean of round trips
    is then over the limit. Quick calls bring it back under, and polling resumes."""
    (hits, misses), (hits_at_end, misses_at_end) = await _run(tmp_path, ADAPTING)
    assert (hits, misses) == (0, 1)
    assert hits_at_end >= 100, (hits_at_end, misses_at_end)


PUSHING = """
    import threading
    import ipcbus.sync

    got = []
    all_in = threading.Event()
    ipc = ipcbus.sync.IpcRenderer(spin=0.05)

    @ipc.on("push")
    def on_push(event, i):
        got.append(i)
        if len(got) == 3 * 300:
            all_in.set()

    with ipc.connect():
        replies = [ipc.invoke("pushes", 300) for _ in range(3)]
        assert all_in.wait(20)
        ipc.invoke("report", replies, got == list(range(300)) * 3, ipc._link.spin.hits)
"""


async def test_pushes_read_while_polling_reach_the_listener_in_order(tmp_path: Path) -> None:
    replies, in_order, hits = await _run(tmp_path, PUSHING)
    assert replies == ["done"] * 3
    assert in_order
    assert hits > 0


TIMING_OUT = """
    import time
    import ipcbus, ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer(spin=1.0)
    with ipc.connect():
        started = time.monotonic()
        try:
            ipc.invoke("sleep", 10, timeout=0.2)
        except ipcbus.IpcTimeoutError:
            took = time.monotonic() - started
        ipc.invoke("report", took, ipc.invoke("inc", 1))
"""


async def test_a_timeout_shorter_than_the_polling_is_kept(tmp_path: Path) -> None:
    """Polling stops at the call's deadline, not at the end of its 1 s."""
    took, answer = await _run(tmp_path, TIMING_OUT)
    assert 0.2 <= took < 0.9, took
    assert answer == 2  # the link is whole


INTERRUPTED = """
    import time
    import ipcbus, ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer(spin=1.0)
    with ipc.connect():
        try:
            ipc.invoke("wait-for-ctrl-c")
        except KeyboardInterrupt:
            caught = time.monotonic()  # the system's clock: main's is the same
        else:
            raise SystemExit("the call was not interrupted")
        ipc.invoke("report", caught, ipc.invoke("inc", 1), ipc.invoke("was-cancelled"))
"""


async def test_ctrl_c_while_polling_is_raised_at_once_and_stops_mains_handler(
    tmp_path: Path,
) -> None:
    """Raised in the middle of the poll (its 1 s would otherwise run out first)."""
    cancelled = anyio.Event()
    sent: list[float] = []

    async def wait_for_ctrl_c(event: ipcbus.IpcMainInvokeEvent) -> None:
        sent.append(time.monotonic())
        os.kill(event.sender.process_id, signal.SIGINT)
        try:
            await anyio.sleep(30)
        finally:
            cancelled.set()

    async def was_cancelled(event: ipcbus.IpcMainInvokeEvent) -> bool:
        with anyio.move_on_after(10):
            await cancelled.wait()
        return cancelled.is_set()

    caught, answer, stopped = await _run(
        tmp_path,
        INTERRUPTED,
        **{"wait-for-ctrl-c": wait_for_ctrl_c, "was-cancelled": was_cancelled},
    )
    assert caught - sent[0] < 0.5, caught - sent[0]
    assert answer == 2  # the link is whole
    assert stopped


def _poll_recv_interrupted_at(opcode: int) -> tuple[bool, int, int]:
    """``poll_recv`` of 10 waiting bytes with a KeyboardInterrupt raised at its
    ``opcode``-th instruction: (whether it fired, bytes counted in ``got``,
    bytes still in the socket)."""
    code = poll_recv.__code__
    nops = {i.offset for i in dis.get_instructions(code) if i.opname == "NOP"}
    a, b = socket.socketpair()
    seen = 0
    fired = False

    def local(frame: Any, event: str, arg: Any) -> Any:
        nonlocal seen, fired
        if event == "opcode" and frame.f_lasti not in nops:  # no signal lands on a NOP
            seen += 1
            if seen == opcode:
                fired = True
                raise KeyboardInterrupt
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes, frame.f_trace_lines = True, False
        return local

    with a, b:
        b.sendall(b"0123456789")
        got: deque[int] = deque()
        buffer = memoryview(bytearray(64))
        try:
            sys.settrace(tracer)
            try:
                poll_recv(a, got, buffer, time.monotonic_ns() + 10**9)
            finally:
                sys.settrace(None)
        except KeyboardInterrupt:
            pass
        a.setblocking(False)
        try:
            left = len(a.recv(64))
        except BlockingIOError:
            left = 0
    return fired, sum(got), left


def test_a_ctrl_c_anywhere_in_a_poll_loses_no_byte() -> None:
    """Raised at any instruction of ``poll_recv``, an interrupt leaves each byte
    either counted in ``got`` (the caller feeds it to the core) or in the socket."""
    for opcode in range(1, 1000):
        fired, counted, left = _poll_recv_interrupted_at(opcode)
        if not fired:
            break  # past its last instruction: every one was tried
        assert counted + left == 10, f"an interrupt at instruction {opcode} lost bytes"
    else:
        pytest.fail("poll_recv did not return within 1,000 instructions")


@pytest.mark.parametrize(
    ("spin", "error"),
    [(-0.001, ValueError), (1.5, ValueError), (float("nan"), ValueError), ("0.1", TypeError)],
)
def test_spin_is_checked(spin: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="spin must be"):
        ipcbus.sync.IpcRenderer(spin=spin)


def test_spin_true_is_not_a_number_of_seconds() -> None:
    with pytest.raises(TypeError, match="spin must be a number of seconds, not bool"):
        ipcbus.sync.IpcRenderer(spin=True)


THREADS = """
    import threading
    import ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer(spin=0.05)
    results = {}

    def caller(tag):
        results[tag] = [ipc.invoke("inc", tag * 1000 + i) for i in range(100)]

    with ipc.connect():
        threads = [threading.Thread(target=caller, args=(tag,)) for tag in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        right = all(results[tag] == [tag * 1000 + i + 1 for i in range(100)] for tag in range(8))
        ipc.invoke("report", right, ipc._link.spin.hits)
"""


async def test_threads_calling_at_once_each_get_their_own_reply(tmp_path: Path) -> None:
    """Polling is the leader's; the other callers follow, and are handed their replies."""
    right, hits = await _run(tmp_path, THREADS)
    assert right
    assert hits > 0
