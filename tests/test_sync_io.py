"""The blocking renderer's own I/O: calls read the socket in the caller's thread.

What the leader/follower design (``ipcbus._blocking``) risks: pushes read by
a caller, replies read by one thread for another, the link dying under many
waiters, heartbeats with and without a call in flight, and main calling the
renderer while the renderer's thread waits in its own call. Real sockets, a
real ``IpcMain`` (or, where the test must hold main's frames back, main's
side of the sans-I/O core on a real socket).
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
import pytest

import ipcbus
import ipcbus.sync
from ipcbus._events import Request
from ipcbus._protocol import Connection

from .faults._raw import bench, make_certificate
from .helpers import (
    connected_by_hand,
    each_instruction,
    general_reads,
    patch_link_writes,
    running_main,
)


async def test_pushes_during_a_call_reach_the_listener_in_order() -> None:
    """Main sends while the caller's thread reads for its reply: that thread hands them on."""
    with anyio.fail_after(20):
        async with running_main() as ipc_main:

            @ipc_main.handle("work")
            async def work(event: ipcbus.IpcMainInvokeEvent, n: int) -> str:
                for i in range(n):
                    await event.sender.send("push", i)
                return "done"

            listener = await ipc_main.listen()

            def client() -> list[int]:
                got: list[int] = []
                all_in = threading.Event()
                ipc = ipcbus.sync.IpcRenderer()

                @ipc.on("push")
                def on_push(event: ipcbus.IpcRendererEvent, i: int) -> None:
                    got.append(i)
                    if len(got) == 3 * 200:
                        all_in.set()

                with ipc.connect(listener.address, token=listener.token):
                    for _ in range(3):
                        assert ipc.invoke("work", 200) == "done"
                    assert all_in.wait(10)
                return got

            got = await anyio.to_thread.run_sync(client)
            assert got == list(range(200)) * 3


async def test_eight_threads_invoking_at_once_each_get_their_own_replies() -> None:
    threads = 8
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            arrived = 0
            everyone = anyio.Event()

            @ipc_main.handle("gather")
            async def gather(event: ipcbus.IpcMainInvokeEvent, tag: int) -> int:
                # Replies only once all eight calls wait: seven threads follow
                # while one leads, and the leader reads the others' replies.
                nonlocal arrived
                arrived += 1
                if arrived == threads:
                    everyone.set()
                await everyone.wait()
                return tag * 10

            ipc_main.handle("inc", lambda event, tag, i: (tag, i + 1))
            listener = await ipc_main.listen()

            def client() -> list[list[Any]]:
                results: list[list[Any]] = [[] for _ in range(threads)]
                with ipcbus.sync.connect(listener.address, token=listener.token) as ipc:

                    def caller(tag: int) -> None:
                        results[tag].append(ipc.invoke("gather", tag))
                        for i in range(100):
                            results[tag].append(ipc.invoke("inc", tag, i))

                    workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
                    for worker in workers:
                        worker.start()
                    for worker in workers:
                        worker.join(20)
                return results

            results = await anyio.to_thread.run_sync(client)
            for tag, got in enumerate(results):
                assert got == [tag * 10] + [[tag, i + 1] for i in range(100)]


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="the reader thread watches with epoll")
async def test_the_reader_thread_stops_watching_before_a_request_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call's reply wakes only the caller: the reader thread's watch is off before
    the request is written, so when the reply is there to read the watch does not
    see it (when it was switched off after the write, a quick reply woke the reader
    thread too, which then fought the caller for the GIL and the lock)."""
    from ipcbus._blockio import send_all

    seen: list[bool] = []

    def send_then_wait_for_the_reply(sock: socket.socket, data: bytearray, *rest: Any) -> None:
        send_all(sock, data, *rest)
        link = rest[-1].__self__  # send_all(..., lost=link.lost)
        if not link._waiters:
            return  # the Hello, or the Goodbye: no call waits for a reply
        poll = select.poll()
        poll.register(sock.fileno(), select.POLLIN)
        # Not there within 10 s: another thread read it (the reader thread,
        # still watching), which is what the test rules out.
        assert poll.poll(10_000), "the reply was not left for the caller to read"
        seen.append(link._watch.wait(0))  # would the reader thread wake for it now?

    patch_link_writes(monkeypatch, send_then_wait_for_the_reply)
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("inc", lambda event, i: i + 1)
            listener = await ipc_main.listen()

            def client() -> list[int]:
                with ipcbus.sync.connect(listener.address, token=listener.token) as ipc:
                    return [ipc.invoke("inc", i) for i in range(20)]

            assert await anyio.to_thread.run_sync(client) == list(range(1, 21))
    assert len(seen) == 20
    assert not any(seen)


async def test_a_call_does_not_lead_while_its_request_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write can wait for main to read, and main for us to read: while a call's
    request is being written another caller must be free to lead and read (a call
    that led from before its write kept a follower's reply unread until the
    write completed, or the link was lost)."""
    from ipcbus._blockio import send_all

    leading: list[bool] = []

    def send_and_look(sock: socket.socket, data: bytearray, *rest: Any) -> None:
        link = rest[-1].__self__  # send_all(..., lost=link.lost)
        if link._waiters:  # a call's request (not the Hello or the Goodbye)
            leading.append(link._leading)
        send_all(sock, data, *rest)

    patch_link_writes(monkeypatch, send_and_look)
    # No heartbeats: the reader thread would lead, for a moment, to read a ping.
    with anyio.fail_after(30):
        async with running_main(heartbeat_interval=None) as ipc_main:
            ipc_main.handle("inc", lambda event, i: i + 1)
            listener = await ipc_main.listen()

            def client() -> list[int]:
                ipc = ipcbus.sync.IpcRenderer(heartbeat_interval=None)
                with ipc.connect(listener.address, token=listener.token):
                    return [ipc.invoke("inc", i) for i in range(20)]

            assert await anyio.to_thread.run_sync(client) == list(range(1, 21))
    assert leading == [False] * 20


async def test_a_call_whose_bytes_cannot_be_taken_ends_the_link_and_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call that fails after its request is queued (taking its bytes raised)
    leaves no waiter, and main never runs it: its caller got an error, so the
    link ends (bytes taken and not sent would tear the stream anyway), and the
    next call says the connection is closed."""
    seen: list[int] = []
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("inc", lambda event, i: seen.append(i) or i + 1)
            listener = await ipc_main.listen()

            def client() -> tuple[dict[int, Any], BaseException]:
                with ipcbus.sync.connect(listener.address, token=listener.token) as ipc:
                    link = ipc._link
                    assert link is not None
                    assert ipc.invoke("inc", 0) == 1

                    taken = Connection.data_to_send

                    def out_of_memory(conn: Connection) -> bytearray:
                        if conn is link.conn:  # main's connections, in this process, go on
                            raise MemoryError
                        return taken(conn)

                    monkeypatch.setattr(Connection, "data_to_send", out_of_memory)
                    with pytest.raises(MemoryError):
                        ipc.invoke("inc", 1)
                    monkeypatch.undo()
                    left = dict(link._waiters)
                    with pytest.raises(ipcbus.ConnectionClosedError) as closed:
                        ipc.invoke("inc", 2)
                    return left, closed.value

            left, closed = await anyio.to_thread.run_sync(client)
            renderer = ipc_main.get_all_web_contents()
            if renderer:  # main may not have seen the end yet
                await renderer[0].wait_closed()
    assert left == {}
    assert "could not be written" in str(closed)
    assert seen == [0]


async def test_a_blocking_call_takes_its_reply_alone_without_the_general_walk() -> None:
    """A reply alone in its read (every read of a caller that waits for each
    answer) is taken with ``Connection.receive_alone``, by main and by the
    blocking link alike; ``receive_data`` is left for everything else."""
    with anyio.fail_after(30):
        async with running_main(heartbeat_interval=None) as ipc_main:
            ipc_main.handle("inc", lambda event, i: i + 1)
            listener = await ipc_main.listen()

            def client() -> tuple[list[int], int]:
                ipc = ipcbus.sync.IpcRenderer(heartbeat_interval=None)
                with ipc.connect(listener.address, token=listener.token):
                    assert ipc.invoke("inc", 0) == 1
                    with general_reads() as general:
                        return [ipc.invoke("inc", i) for i in range(50)], general[0]

            results, general = await anyio.to_thread.run_sync(client)
    assert results == list(range(1, 51))
    assert general == 0


async def test_replies_larger_than_one_read_arrive_intact() -> None:
    """Every read goes into one buffer the link keeps: what a read took must be
    copied out before the next read overwrites it (a frame spans many reads)."""
    blobs = [os.urandom(n) for n in (1, 70_000, 300_000, 3 << 20)]
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("blob", lambda event, i: blobs[i])
            listener = await ipc_main.listen()

            def client() -> list[bytes]:
                with ipcbus.sync.connect(listener.address, token=listener.token) as ipc:
                    return [ipc.invoke("blob", i) for i in (3, 0, 2, 1, 3)]

            got = await anyio.to_thread.run_sync(client)
    assert got == [blobs[i] for i in (3, 0, 2, 1, 3)]


async def test_the_link_ending_mid_call_fails_every_waiting_thread() -> None:
    threads = 6
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            waiting = 0
            all_waiting = anyio.Event()

            @ipc_main.handle("hang")
            async def hang(event: ipcbus.IpcMainInvokeEvent) -> None:
                nonlocal waiting
                waiting += 1
                if waiting == threads:
                    all_waiting.set()
                await anyio.sleep_forever()

            connected = anyio.Event()
            contents_of: list[ipcbus.WebContents] = []
            ipc_main.on_connect(lambda contents: (contents_of.append(contents), connected.set()))
            listener = await ipc_main.listen()
            ipc = await anyio.to_thread.run_sync(
                lambda: ipcbus.sync.connect(listener.address, token=listener.token)
            )
            errors: list[BaseException] = []

            def caller() -> None:
                try:
                    ipc.invoke("hang")
                except BaseException as exc:
                    errors.append(exc)

            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(threads):
                        tg.start_soon(anyio.to_thread.run_sync, caller)
                    await connected.wait()
                    await all_waiting.wait()
                    await contents_of[0].close()  # main ends the connection under them
                assert len(errors) == threads
                for error in errors:
                    assert isinstance(error, ipcbus.ConnectionClosedError), repr(error)
                    assert "'hang'" in str(error)
                assert await anyio.to_thread.run_sync(ipc.wait_closed, 10)
                assert not ipc.is_connected()
                with pytest.raises(ipcbus.ConnectionClosedError):
                    await anyio.to_thread.run_sync(lambda: ipc.invoke("hang"))
            finally:
                await anyio.to_thread.run_sync(ipc.close)


async def test_main_invokes_the_renderer_while_its_thread_waits_in_its_own_invoke() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:

            @ipc_main.handle("ask")
            async def ask(event: ipcbus.IpcMainInvokeEvent, suffix: str) -> str:
                # The renderer's calling thread leads: it reads this request.
                return str(await event.sender.invoke("title", suffix)) + "."

            listener = await ipc_main.listen()

            def client() -> list[str]:
                ipc = ipcbus.sync.IpcRenderer()
                ipc.handle("title", lambda event, suffix: "window" + suffix)
                with ipc.connect(listener.address, token=listener.token):
                    return [ipc.invoke("ask", str(i)) for i in range(20)]

            assert await anyio.to_thread.run_sync(client) == [f"window{i}." for i in range(20)]


# ---- heartbeats: main's side of the core on a real socket ---------------------------


@pytest.fixture
def socket_path() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="ipcbus-test-")
    try:
        yield os.path.join(directory, "main.sock")
    finally:
        shutil.rmtree(directory)


def test_pings_are_answered_while_idle_and_while_a_call_is_in_flight(socket_path: str) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(socket_path)
        server.listen()
        with connected_by_hand(server, f"unix:{socket_path}") as (ipc, main):
            main.ping(1)  # idle: the reader thread answers
            result: list[object] = []
            calling = threading.Thread(target=lambda: result.append(ipc.invoke("slow", 1)))
            calling.start()
            request = main.next_event()
            assert isinstance(request, Request)
            main.ping(2)  # the call waits: its own thread reads the Ping and answers
            main.ping(3)
            main.conn.send_reply(request.request_id, True, 42)
            main.flush()
            calling.join(10)
            assert result == [42]
            main.ping(4)  # idle again


# ---- TLS -----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
async def test_a_blocking_renderer_over_tls(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("add", lambda event, a, b: a + b)
            listener = await ipc_main.listen("tcp://127.0.0.1:0", ssl_context=server)

            def blocking() -> None:
                with ipcbus.sync.connect(
                    listener.address, token=listener.token, ssl_context=client
                ) as ipc:
                    assert ipc.invoke("add", 20, 22) == 42
                    big = ipc.invoke("add", b"x" * 300_000, b"y")
                    assert big == b"x" * 300_000 + b"y"
                with pytest.raises(ipcbus.ConnectionClosedError, match="TLS"):
                    ipcbus.sync.connect(
                        listener.address,
                        token=listener.token,
                        ssl_context=ssl.create_default_context(),
                    )

            await anyio.to_thread.run_sync(blocking)


def _send_all_interrupted_at(opcode: int, size: int) -> tuple[bool, int, list[str]]:
    """``send_all`` of ``size`` bytes with a KeyboardInterrupt raised at its
    ``opcode``-th instruction: (whether it fired, bytes the peer got, ``lost`` calls)."""
    from collections import deque

    from ipcbus._blockio import send_all

    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    got: list[int] = []

    def drain() -> None:
        while data := b.recv(65536):
            got.append(len(data))

    reader = threading.Thread(target=drain)
    reader.start()
    seen = 0
    fired = False

    def step(frame: FrameType) -> None:
        nonlocal seen, fired
        seen += 1
        if seen == opcode:
            fired = True
            raise KeyboardInterrupt

    lost: list[str] = []
    try:
        with each_instruction(send_all.__code__, step):
            send_all(a, bytearray(size), deque(), 5.0, "main", lost.append)
    except KeyboardInterrupt:
        pass
    a.shutdown(socket.SHUT_WR)
    reader.join(10)
    a.close()
    b.close()
    return fired, sum(got), lost


def test_a_ctrl_c_anywhere_in_a_write_leaves_no_half_frame() -> None:
    """Raised at any instruction of ``send_all`` while a large frame goes out in
    several sends, an interrupt leaves the peer the whole frame, or none of it,
    or the link ended (``lost``): never half a frame on a live link, which would
    have every later frame misread. (An early version of the first, whole-frame
    send tried it outside the guard that finishes an interrupted frame.)"""
    size = 64 * 1024  # many sends through 4 KiB buffers
    for opcode in range(1, 5000):
        fired, got, lost = _send_all_interrupted_at(opcode, size)
        if not fired:
            break  # past its last instruction: every one was tried
        assert got in (0, size) or lost, (
            f"an interrupt at instruction {opcode} of send_all left {got} of {size} bytes "
            "on a link that was not ended"
        )
    else:
        pytest.fail("send_all did not finish within 5,000 instructions")


def test_close_does_not_wait_for_a_write_main_does_not_take(socket_path: str) -> None:
    """One thread's send is stuck (main reads nothing); another closes: close returns
    at once rather than when the write times out (30 s, or never with
    ``send_timeout=None``), and the stuck sender learns why."""
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(socket_path)
        server.listen()
        with connected_by_hand(server, f"unix:{socket_path}") as (ipc, _main):
            errors: list[Exception] = []
            sent = 0

            def flood() -> None:
                nonlocal sent
                try:
                    while True:
                        ipc.send("blob", b"x" * (1 << 20))
                        sent += 1
                except ipcbus.ConnectionClosedError as exc:
                    errors.append(exc)

            sender = threading.Thread(target=flood)
            sender.start()
            link = ipc._link
            assert link is not None
            deadline = time.monotonic() + 10
            while not link._write.locked():  # the sender is in a write (1 MiB: it stays)
                assert time.monotonic() < deadline, "the sender never got into a write"
                time.sleep(0.01)  # a thread's state: nothing reports it
            started = time.monotonic()
            ipc.close()
            took = time.monotonic() - started
            sender.join(10)
    assert took < 5, took
    assert len(errors) == 1 and "the renderer disconnected" in str(errors[0]), errors


async def test_close_during_a_write_main_takes_keeps_the_message_and_the_goodbye() -> None:
    """Main reads; one thread sends 32 MiB, another closes meanwhile: close waits
    for the write in progress (it would cut the frame, and lose the message and the
    Goodbye), so main gets both and reports a clean exit."""
    got: list[int] = []
    with anyio.fail_after(30):
        async with bench() as setup:
            setup.ipc_main.on("blob", lambda event, blob: got.append(len(blob)))

            def client() -> tuple[int, list[BaseException]]:
                ipc = ipcbus.sync.IpcRenderer()
                ipc.connect(setup.listener.address, token=setup.listener.token)
                errors: list[BaseException] = []
                link = ipc._link
                assert link is not None

                def writer() -> None:
                    try:
                        ipc.send("blob", b"x" * (32 << 20))
                    except Exception as exc:
                        errors.append(exc)

                sender = threading.Thread(target=writer)
                sender.start()
                deadline = time.monotonic() + 10
                while not link._write.locked():  # the writer is in its write
                    assert time.monotonic() < deadline
                    time.sleep(0.0005)  # a thread's state: nothing reports it
                ipc.close()
                sender.join(10)
                return ipc.id, errors

            renderer_id, errors = await anyio.to_thread.run_sync(client)
            details = await setup.disconnected(renderer_id, timeout=10)
    assert errors == []
    assert got == [32 << 20]
    assert details.reason == "clean-exit", details
