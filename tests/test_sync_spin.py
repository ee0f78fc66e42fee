"""A blocking call polls the socket for its reply before it sleeps (``ipcbus._spin``).

Main runs here; the blocking renderers are child processes (polling is off
while an ``IpcMain`` runs in the caller's own process), and report what their
link's ``Spin`` saw through an ``invoke``. Where a test needs to poll for
longer than ``spin`` may be (``MAX_SPIN``), the child sets its link's limit.
The tests at the end drive main's end of the connection by hand, over TCP (a
peer this process does not recognise as itself), to send exactly what the
first poll of a call reads.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import pytest

import ipcbus
import ipcbus.sync
from ipcbus import _spin
from ipcbus._blockio import poll_recv
from ipcbus._events import Request
from ipcbus._protocol import Connection, Role
from ipcbus._spin import MAX_SPIN, Spin, _cpus, peer_is_this_process
from ipcbus._wire import Pong

from .helpers import (
    HandDrivenMain,
    connected_by_hand,
    each_instruction,
    patch_link_writes,
    running_main,
    spawn_script,
)

#: Tests that show polling happen: with one CPU there is none, by design.
polls = pytest.mark.skipif(_cpus() < 2, reason="blocking calls do not poll with one CPU")


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
            async def pushes(event: ipcbus.IpcMainInvokeEvent, n: int, then: float = 0) -> str:
                for i in range(n):
                    await event.sender.send("push", i)
                await anyio.sleep(then)
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
    from ipcbus._spin import peer_is_this_process

    ipc = ipcbus.sync.IpcRenderer(spin=0.005)
    with ipc.connect():
        got = [ipc.invoke("inc", i) for i in range(200)]
        spin = ipc._link.spin
        ours = peer_is_this_process(ipc._link.sock)
        ipc.invoke("report", got == list(range(1, 201)), ours, spin.limit, spin.hits)
"""


@polls
async def test_a_call_to_main_in_another_process_polls_for_its_reply(tmp_path: Path) -> None:
    """Each reply is read by polling (a non-blocking read), not by a read that slept."""
    right, ours, limit, hits = await _run(tmp_path, POLLING)
    assert right
    assert not ours  # main is the child's unix peer, in another process
    assert limit == 5_000_000  # ns
    # 200 replies, most within 5 ms of their request even on a busy machine
    assert hits >= 100, hits


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


@pytest.mark.parametrize("address", [None, "tcp://127.0.0.1:0"])
async def test_no_polling_while_an_ipc_main_runs_in_the_same_process(address: str | None) -> None:
    """The caller would take back the GIL that main's loop waits for between polls.
    Over TCP (or TLS) the peer cannot be told apart: main says it runs here."""
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("inc", lambda event, i: i + 1)
            listener = await ipc_main.listen(address)

            def client() -> tuple[bool, int, int]:
                with ipcbus.sync.connect(listener.address, token=listener.token) as ipc:
                    got = [ipc.invoke("inc", i) for i in range(40)]  # past a probe (_PROBE)
                    link = ipc._link
                    assert link is not None
                    return got == list(range(1, 41)), link.spin.hits, link.spin.misses

            assert await anyio.to_thread.run_sync(client) == (True, 0, 0)


def test_a_unix_peer_in_this_process_is_recognised() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert peer_is_this_process(a)
    with socket.socket() as tcp:  # not a unix socket: cannot be told, so not ours
        assert not peer_is_this_process(tcp)


@polls
def test_while_polling_is_off_one_call_in_sixteen_polls_and_a_quick_one_turns_it_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Else the mean would see only calls that slept, slower by the wake-up that
    polling saves, and could stay over the limit for good."""
    monkeypatch.setattr(_spin, "mains", 0)  # whatever other tests left running
    with socket.socket() as tcp:
        spin = Spin(MAX_SPIN, tcp, can_poll=True)
    limit = spin.limit
    assert limit == 5_000_000
    assert spin.until(10) == 10 + limit
    spin.took(10 * 8 * limit, True)  # one slow call: the mean is over the limit
    polled = [spin.until(0) != 0 for _ in range(32)]
    assert polled.count(True) == 2
    assert polled[15] and polled[31]
    spin.took(2 * limit, False)  # a call that slept: the mean stays over
    assert spin.until(0) == 0
    spin.took(limit // 2, True)  # a probe that polled, and was quick: polling is back
    assert all(spin.until(0) != 0 for _ in range(32))


def test_a_forked_child_does_not_inherit_its_parents_running_mains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its own calls to that parent may poll: the parent's loop runs elsewhere."""
    monkeypatch.setattr(_spin, "mains", 2)
    _spin._forked()  # what os.register_at_fork runs in the child
    assert _spin.mains == 0


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


@polls
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
    arrived = threading.Condition()
    ipc = ipcbus.sync.IpcRenderer(spin=0.005)

    @ipc.on("push")
    def on_push(event, i):
        with arrived:
            got.append(i)
            arrived.notify_all()

    with ipc.connect():
        # Poll for up to 10 s: a call of 300 pushes can take longer than ``spin``
        # on a slow or busy machine, and the running mean would then turn polling
        # off, so that the test would show nothing about reads that polling took.
        ipc._link.spin.limit = 10**10
        replies = [ipc.invoke("pushes", 300) for _ in range(3)]
        with arrived:
            assert arrived.wait_for(lambda: len(got) == 300 * len(replies), 20)
        spin = ipc._link.spin
        in_order = got == list(range(300)) * len(replies)
        ipc.invoke("report", replies, in_order, spin.hits, spin.misses, spin.limit, spin.recent)
"""


@polls
async def test_pushes_read_while_polling_reach_the_listener_in_order(tmp_path: Path) -> None:
    replies, in_order, hits, *spin = await _run(tmp_path, PUSHING)
    assert replies == ["done"] * 3
    assert in_order
    assert hits == 3, spin  # each call's first read, polled: misses, limit, recent


TIMING_OUT = """
    import time
    import ipcbus, ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer()
    with ipc.connect():
        spin = ipc._link.spin
        spin.limit = 10**10  # poll for up to 10 s
        started = time.monotonic()
        try:
            ipc.invoke("sleep", 10, timeout=0.2)
        except ipcbus.IpcTimeoutError:
            took = time.monotonic() - started
        recent = spin.recent  # the running mean, ns: a call that timed out counts
        ipc.invoke("report", took, recent, ipc.invoke("inc", 1))
"""


@polls
async def test_a_timeout_shorter_than_the_polling_is_kept(tmp_path: Path) -> None:
    """Polling stops at the call's deadline, not at the end of its 10 s; and the
    call counts as slow, so calls that keep timing out do not keep polling."""
    took, recent, answer = await _run(tmp_path, TIMING_OUT)
    assert 0.2 <= took < 5, took
    assert recent >= 0.2e9 // 8  # an eighth of the way to its 0.2 s
    assert answer == 2  # the link is whole


HANDING_OVER = """
    import time
    import threading
    import ipcbus.sync

    pushed = threading.Event()
    ipc = ipcbus.sync.IpcRenderer()
    ipc.on("push", lambda event, i: pushed.set())
    with ipc.connect():
        ipc._link.spin.limit = 10**10  # poll for up to 10 s
        cpu = time.thread_time()
        assert ipc.invoke("pushes", 1, 2.0) == "done"  # a push, then the reply 2 s later
        cpu = time.thread_time() - cpu
        ipc.invoke("report", cpu, pushed.wait(10))
"""


@polls
async def test_a_call_stops_polling_once_it_hands_work_to_another_thread(tmp_path: Path) -> None:
    """The push goes to the loop thread, which needs the GIL that a polling caller
    would keep taking back: the caller sleeps for the rest of its call instead of
    polling through main's 2 s."""
    cpu, pushed = await _run(tmp_path, HANDING_OVER)
    assert pushed
    assert cpu < 0.5, f"the caller used {cpu:.3f} s of CPU waiting 2 s for its reply"


HUNG_UP = """
    import time
    import ipcbus, ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer()
    ipc.connect()
    ipc._link.spin.limit = 10**10  # poll for up to 10 s
    started = time.monotonic()
    try:
        ipc.invoke("hang-up")
    except ipcbus.ConnectionClosedError as exc:
        took = time.monotonic() - started
        said = str(exc)
    else:
        raise SystemExit("the call did not fail")
    ipc.close()
    print(took, said, flush=True)
    raise SystemExit(0 if took < 5 else 1)
"""


@polls
async def test_main_hanging_up_while_a_call_polls_fails_the_call_at_once(
    tmp_path: Path,
) -> None:
    """The end of the stream, read by the poll, ends the link and the call with it."""
    with anyio.fail_after(60):
        async with running_main() as ipc_main:

            @ipc_main.handle("hang-up")
            async def hang_up(event: ipcbus.IpcMainInvokeEvent) -> None:
                await event.sender.close()

            contents = await spawn_script(ipc_main, tmp_path, HUNG_UP)
            await contents.wait_closed()
    # main reaps a child whose connection ended: its status says how the call went
    assert contents.disconnect_details.exit_code == 0, contents.disconnect_details


INTERRUPTED = """
    import time
    import traceback
    import ipcbus, ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer()
    with ipc.connect():
        ipc._link.spin.limit = 10**10  # poll for up to 10 s
        try:
            ipc.invoke("wait-for-ctrl-c")
        except KeyboardInterrupt as exc:
            caught = time.monotonic()  # the system's clock: main's is the same
            where = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        else:
            raise SystemExit("the call was not interrupted")
        polling = "poll_recv" in where  # raised in the poll (by the SIGINT handler)
        ipc.invoke("report", caught, polling, ipc.invoke("inc", 1), ipc.invoke("was-cancelled"))
"""


@polls
async def test_ctrl_c_while_polling_is_raised_at_once_and_stops_mains_handler(
    tmp_path: Path,
) -> None:
    """Raised in the middle of the poll, at once (the poll would last 10 s)."""
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

    caught, polling, answer, stopped = await _run(
        tmp_path,
        INTERRUPTED,
        **{"wait-for-ctrl-c": wait_for_ctrl_c, "was-cancelled": was_cancelled},
    )
    assert caught - sent[0] < 0.5, caught - sent[0]
    assert polling
    assert answer == 2  # the link is whole
    assert stopped


def _poll_recv_interrupted_at(opcode: int, late: bool) -> tuple[bool, int, int]:
    """``poll_recv`` of 10 bytes with a KeyboardInterrupt raised at its
    ``opcode``-th instruction: (whether it fired, bytes counted in ``got``,
    bytes still in the socket, less those sent). The bytes wait from the start, or (``late``)
    are sent once a first read found nothing, so that the loop goes round."""
    lines, first = inspect.getsourcelines(poll_recv)
    retry = first + next(i for i, line in enumerate(lines) if "clock() >= until" in line)
    a, b = socket.socketpair()
    seen = 0
    fired = False
    sent = not late

    def step(frame: FrameType) -> None:
        nonlocal seen, fired, sent
        if not sent and frame.f_lineno == retry:
            b.sendall(b"0123456789")  # arrives while the loop goes round
            sent = True
        seen += 1
        if seen == opcode:
            fired = True
            raise KeyboardInterrupt

    with a, b:
        if not late:
            b.sendall(b"0123456789")
        got: deque[int] = deque()
        buffer = memoryview(bytearray(64))
        try:
            with each_instruction(poll_recv.__code__, step):
                poll_recv(a, got, buffer, time.monotonic_ns() + 10**9)
        except KeyboardInterrupt:
            pass
        a.setblocking(False)
        try:
            left = len(a.recv(64))
        except BlockingIOError:
            left = 0
    return fired, sum(got), left - (10 if sent else 0)


@pytest.mark.parametrize("late", [False, True], ids=["waiting", "arriving"])
def test_a_ctrl_c_anywhere_in_a_poll_loses_no_byte(late: bool) -> None:
    """Raised at any instruction of ``poll_recv``, an interrupt leaves each byte
    either counted in ``got`` (the caller feeds it to the core) or in the socket."""
    for opcode in range(1, 1000):
        fired, counted, left_less_sent = _poll_recv_interrupted_at(opcode, late)
        if not fired:
            break  # past its last instruction: every one was tried
        assert counted + left_less_sent == 0, f"an interrupt at instruction {opcode} lost bytes"
    else:
        pytest.fail("poll_recv did not return within 1,000 instructions")


@pytest.mark.parametrize(
    ("spin", "error"),
    [(-0.001, ValueError), (0.0051, ValueError), (float("nan"), ValueError), ("0.1", TypeError)],
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

    ipc = ipcbus.sync.IpcRenderer(spin=0.005)
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
        ipc.invoke("report", right)
"""


async def test_threads_calling_at_once_each_get_their_own_reply(tmp_path: Path) -> None:
    """A leader polls only while its call is the only one in flight, and stops
    once it hands a reply to another caller; every caller gets its own."""
    assert await _run(tmp_path, THREADS) == [True]


# ---- the first poll of a call, read by hand: main's end driven by the test ------------
#
# Over TCP the peer is not recognised as this process, so a call polls here
# too (no IpcMain runs: main is driven by hand), and the test sends exactly
# the bytes the poll finds.


@contextmanager
def _polling_link(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, HandDrivenMain]]:
    """A blocking renderer connected over TCP to a main driven by hand; its calls
    poll for up to 10 s, so the poll is what reads whatever main sends."""
    monkeypatch.setattr(_spin, "mains", 0)  # whatever other tests left running
    with socket.create_server(("127.0.0.1", 0)) as server:
        host, port = server.getsockname()[:2]
        with connected_by_hand(server, f"tcp://{host}:{port}") as (ipc, main):
            ipc._link.spin.limit = 10**10
            yield ipc, main


def _call_in_thread(ipc: Any, channel: str) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(ipc.invoke(channel))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


@polls
def test_a_push_read_with_the_reply_reaches_its_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    """One read with a push and the reply: the call takes its reply, the push goes
    on to its listener (the read is not the common case of a reply alone)."""
    with _polling_link(monkeypatch) as (ipc, main):
        pushed = threading.Event()
        got: list[Any] = []

        @ipc.on("push")
        def on_push(event: Any, value: Any) -> None:
            got.append(value)
            pushed.set()

        calling, outcome = _call_in_thread(ipc, "answer")
        request = main.next_event()
        assert isinstance(request, Request)
        main.conn.send_message("push", ("first",))
        main.conn.send_reply(request.request_id, True, 42)
        main.flush()  # both frames in one write
        calling.join(10)
        assert outcome == [42]
        assert pushed.wait(10)
        assert got == ["first"]
        assert ipc._link.spin.hits >= 1


@polls
def test_a_ping_read_with_the_reply_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ping that comes in the same read as the reply gets its Pong at once."""
    with _polling_link(monkeypatch) as (ipc, main):
        calling, outcome = _call_in_thread(ipc, "answer")
        request = main.next_event()
        assert isinstance(request, Request)
        main.conn.send_ping(5)
        main.conn.send_reply(request.request_id, True, "ok")
        main.flush()
        calling.join(10)
        assert outcome == ["ok"]
        pong = Connection(Role.MAIN, token="t")
        pong._queue(Pong(5))
        assert main.sock.recv(65536) == bytes(pong.data_to_send())


def _end_of_stream(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_WR)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with SO_LINGER 0: a reset, not an end of stream


@polls
@pytest.mark.parametrize(
    ("hang_up", "said"),
    [(_end_of_stream, "'answer'"), (_reset, "reading from main failed")],
    ids=["end-of-stream", "reset"],
)
def test_main_hanging_up_during_the_first_poll_fails_the_call_saying_why(
    monkeypatch: pytest.MonkeyPatch, hang_up: Callable[[socket.socket], None], said: str
) -> None:
    """The end of the stream, or a read that fails (main's end reset), found by the
    first poll, ends the link and fails the call; a failed read says so."""
    with _polling_link(monkeypatch) as (ipc, main):
        calling, outcome = _call_in_thread(ipc, "answer")
        assert isinstance(main.next_event(), Request)
        hang_up(main.sock)
        calling.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], ipcbus.ConnectionClosedError)
        assert said in str(outcome[0])


@polls
def test_a_call_whose_reply_another_leader_read_does_not_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call held up between writing its request and leading, while another call
    reads its reply for it, returns that reply at once: it does not go on to
    lead and poll for a reply it already has (here the poll would last 10 s)."""
    from ipcbus._blockio import send_all

    written, go_on = threading.Event(), threading.Event()

    def send_then_hold_b(sock: socket.socket, data: bytearray, *rest: Any) -> None:
        send_all(sock, data, *rest)
        if threading.current_thread().name == "b":
            written.set()
            assert go_on.wait(10)

    patch_link_writes(monkeypatch, send_then_hold_b)
    with _polling_link(monkeypatch) as (ipc, main):
        results: dict[str, Any] = {}
        threads = {
            name: threading.Thread(
                target=lambda name=name: results.setdefault(name, ipc.invoke(name)), name=name
            )
            for name in ("a", "b")
        }
        threads["a"].start()
        a = main.next_event()
        with ipc._link._write:  # a has let go of the socket: b writes its own request
            pass
        threads["b"].start()
        assert written.wait(10)
        b = main.next_event()
        assert isinstance(a, Request) and isinstance(b, Request)
        main.conn.send_reply(b.request_id, True, "B")  # a's poll reads both
        main.conn.send_reply(a.request_id, True, "A")
        main.flush()
        threads["a"].join(10)
        assert results == {"a": "A"}
        go_on.set()  # b goes on, its reply already delivered
        threads["b"].join(5)
        assert not threads["b"].is_alive(), "b went on to poll for a reply it had"
        assert results == {"a": "A", "b": "B"}
