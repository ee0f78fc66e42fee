"""The asyncio fast path's socket stream (``ipcbus._aio``), on a real socket pair.

It reads through one buffer shared by every connection on the loop, and can
read a large frame's bytes straight into the frame (``receive_into``).
"""

from __future__ import annotations

import logging
import os
import socket

import anyio
import msgspec
import pytest

import ipcbus
from ipcbus._aio import AsyncioSocketStream
from ipcbus._aioprotocol import SocketProtocol
from ipcbus._protocol import Connection
from ipcbus._queueing import WRITE_AT
from ipcbus._wire import Reply, Request, RequestKind

from .faults._raw import RawPeer, frames, raw_args
from .helpers import running_main


async def _pair() -> tuple[AsyncioSocketStream, socket.socket]:
    ours, theirs = socket.socketpair()
    return await AsyncioSocketStream.from_socket(ours), theirs


async def test_receive_gives_each_read_as_its_own_bytes_despite_the_shared_buffer() -> None:
    a, peer_a = await _pair()
    b, peer_b = await _pair()
    with peer_a, peer_b:
        peer_a.sendall(b"first from a")
        peer_b.sendall(b"first from b")
        with anyio.fail_after(5):
            got_a = await a.receive()
            got_b = await b.receive()
            peer_a.sendall(b"second")
            assert await a.receive() == b"second"
        assert (got_a, got_b) == (b"first from a", b"first from b")  # not overwritten
        await a.aclose()
        await b.aclose()


async def test_try_write_writes_only_while_the_stream_can_take_it() -> None:
    """``try_write`` (a broadcast's one call per renderer): written while open and
    under the high-water mark; refused, with nothing written, once over it or closed."""
    stream, peer = await _pair()
    with peer:
        peer.setblocking(False)
        assert stream.try_write(b"hello") is True
        big = b"x" * (8 * 1024 * 1024)  # more than the kernel takes: the rest is buffered
        assert stream.try_write(big) is True
        assert stream.try_write(b"more") is False  # over the high-water mark
        assert stream.unsent() > 0
        received = bytearray()
        with anyio.fail_after(5):
            while len(received) < 5 + len(big):
                await anyio.wait_readable(peer)  # the transport writes what it holds
                received += peer.recv(1 << 20)
        assert received[:5] == b"hello" and len(received) == 5 + len(big)  # no "more"
        await stream.aclose()
        assert stream.try_write(b"late") is False


async def test_receive_into_reads_straight_into_the_buffer() -> None:
    stream, peer = await _pair()
    with peer:
        target = bytearray(100_000)
        window = memoryview(target)[10:]
        async with anyio.create_task_group() as tg:
            received: list[int] = []

            async def read() -> None:
                received.append(await stream.receive_into(window))

            tg.start_soon(read)
            await anyio.wait_all_tasks_blocked()
            peer.sendall(b"x" * 5000)
        assert received == [5000]
        assert target[10:5010] == b"x" * 5000 and target[5010:5011] == b"\0"
        # Later reads are buffered as usual.
        peer.sendall(b"tail")
        with anyio.fail_after(5):
            assert await stream.receive() == b"tail"
        await stream.aclose()


async def test_receive_into_takes_what_is_already_buffered_first() -> None:
    stream, peer = await _pair()
    with peer:
        peer.sendall(b"abcdef")
        with anyio.fail_after(5):
            assert await stream.receive(2) == b"ab"  # the rest stays buffered
            target = bytearray(3)
            assert await stream.receive_into(memoryview(target)) == 3
            assert target == b"cde"
            target = bytearray(10)
            assert await stream.receive_into(memoryview(target)) == 1
            assert target[:1] == b"f"
        await stream.aclose()


async def test_receive_into_at_end_of_stream_and_after_close() -> None:
    stream, peer = await _pair()
    peer.close()
    with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
        await stream.receive_into(memoryview(bytearray(10)))
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive_into(memoryview(bytearray(10)))


async def test_a_pending_receive_into_fails_when_the_stream_is_closed() -> None:
    stream, peer = await _pair()
    with peer:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                errors: list[BaseException] = []

                async def read() -> None:
                    try:
                        await stream.receive_into(memoryview(bytearray(10)))
                    except anyio.ClosedResourceError as exc:
                        errors.append(exc)

                tg.start_soon(read)
                await anyio.wait_all_tasks_blocked()
                await stream.aclose()
        assert len(errors) == 1


def _drain(sock: socket.socket, size: int) -> bytes:
    """Blocking read of exactly ``size`` bytes (in a worker thread)."""
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        assert chunk, "peer closed early"
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


async def test_a_large_send_arrives_whole_and_in_order_and_restores_the_limits() -> None:
    stream, peer = await _pair()
    with peer:
        transport = stream._transport
        limits = transport.get_write_buffer_limits()
        big = bytes(range(256)) * (5 * 4096 + 7)  # over LARGE_WRITE, not a whole slice
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                received: list[bytes] = []

                async def read() -> None:
                    received.append(await anyio.to_thread.run_sync(_drain, peer, len(big) + 5))

                tg.start_soon(read)
                await stream.send(big)
                await stream.send(b"after")
        assert received == [big + b"after"]
        assert transport.get_write_buffer_limits() == limits
        await stream.aclose()


async def test_a_large_send_to_a_peer_that_leaves_fails_instead_of_hanging() -> None:
    stream, peer = await _pair()
    big = b"x" * (8 * 1024 * 1024)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:

            async def leave() -> None:
                await anyio.wait_all_tasks_blocked()  # the send is waiting for room
                peer.close()

            tg.start_soon(leave)
            with pytest.raises(anyio.BrokenResourceError):
                await stream.send(big)
    await stream.aclose()


@pytest.mark.skipif(bool(os.environ.get("IPCBUS_NO_FASTPATH")), reason="a fast-path feature")
async def test_a_long_read_of_invokes_is_answered_in_several_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replies leave every 16 calls of a long read, so the caller can start on them
    while main makes the rest; all in order, none lost."""
    writes: list[int] = []
    try_write = SocketProtocol.try_write  # what AsyncioSocketStream.try_write is, bound

    def counting(self: SocketProtocol, data: bytes | bytearray) -> bool:
        written = try_write(self, data)
        if written:
            writes.append(len(data))
        return written

    monkeypatch.setattr(SocketProtocol, "try_write", counting)
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("inc", lambda event, x: x + 1)
            listener = await ipc_main.listen()
            async with RawPeer.connect(listener.address) as peer:  # not the fast path
                await peer.handshake(listener.token)
                writes.clear()
                calls = [Request(i + 1, RequestKind.INVOKE, "inc", raw_args(i)) for i in range(64)]
                await peer.send(frames(*calls))  # one write: main reads them at once
                replies = [await peer.receive() for _ in calls]
    assert [(r.request_id, r.ok) for r in replies if isinstance(r, Reply)] == [
        (i + 1, True) for i in range(64)
    ]
    assert [msgspec.msgpack.decode(r.value) for r in replies if isinstance(r, Reply)] == [
        i + 1 for i in range(64)
    ]
    assert len(writes) >= 4, writes


@pytest.mark.skipif(bool(os.environ.get("IPCBUS_NO_FASTPATH")), reason="a fast-path feature")
async def test_a_sender_that_never_yields_has_its_sends_written_as_they_pass_64_kib() -> None:
    """A loop of ``await send`` that never suspends keeps main busy: its bytes
    leave every ``WRITE_AT`` (64 KiB) instead of waiting for the loop's next
    turn or for ``SEND_HIGH_WATER``, as the raw asyncio floor writes them."""
    got = anyio.Event()
    count = 0
    n = 20_000  # about 300 KiB of frames: past WRITE_AT, past SEND_HIGH_WATER

    def sink(event: ipcbus.IpcMainEvent, i: int) -> None:
        nonlocal count
        assert i == count  # in order, none lost
        count += 1
        if count == n:
            got.set()

    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.on("sink", sink)
            async with ipc_main.connect_local() as renderer:
                endpoint = renderer._open_endpoint()
                most = 0
                for i in range(n):
                    await renderer.send("sink", i)
                    most = max(most, endpoint.conn.pending_output)
                await got.wait()
    assert most <= WRITE_AT + 64, most  # a frame of at most 64 bytes past the mark


@pytest.mark.skipif(bool(os.environ.get("IPCBUS_NO_FASTPATH")), reason="a fast-path feature")
async def test_sends_past_64_kib_into_a_congested_transport_leave_the_queue_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``WRITE_AT`` a send writes at once only if the transport takes it. Into
    a congested one (main not reading) each send used to take everything queued and
    hand it back (``unsend``, a copy of up to 256 KiB) until the writer task ran."""
    handed_back = 0
    unsend = Connection.unsend

    def counting(self: Connection, data: bytes | bytearray) -> None:
        nonlocal handed_back
        handed_back += bool(data)
        unsend(self, data)

    monkeypatch.setattr(Connection, "unsend", counting)
    holding, release, done = anyio.Event(), anyio.Event(), anyio.Event()
    got: list[int] = []
    n = 400  # 1 KiB each: past the kernel's buffer, the transport's and SEND_HIGH_WATER

    async def hold(event: ipcbus.IpcMainEvent) -> None:
        holding.set()
        await release.wait()  # main's one call in flight (max_in_flight=1): it stops reading

    def sink(event: ipcbus.IpcMainEvent, i: int, pad: bytes) -> None:
        got.append(i)
        if len(got) == n:
            done.set()

    with anyio.fail_after(20):
        async with running_main(max_in_flight=1) as ipc_main:
            ipc_main.on("hold", hold)
            ipc_main.on("sink", sink)
            async with ipc_main.connect_local() as renderer:
                stream = renderer._open_endpoint().stream
                sock = stream._transport.get_extra_info("socket")  # type: ignore[attr-defined]
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                await renderer.send("hold")
                await holding.wait()

                async def sends() -> None:
                    for i in range(n):
                        await renderer.send("sink", i, b"x" * 1024)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sends)
                    await anyio.wait_all_tasks_blocked()  # the sender waits for the writer
                    while_congested = handed_back
                    release.set()
                await done.wait()
    assert got == list(range(n))
    assert while_congested <= 2, while_congested


@pytest.mark.skipif(bool(os.environ.get("IPCBUS_NO_FASTPATH")), reason="a fast-path feature")
async def test_large_sends_to_a_renderer_that_died_fail_soon_and_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """asyncio learns that a write failed a loop turn later; a loop of sends past
    ``WRITE_AT`` that never yields must not write into the failed transport send
    after send (never waiting, never raising, asyncio logging each write)."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    sent = 0
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            async with RawPeer.connect(listener.address) as peer:
                contents = await peer.web_contents(ipc_main, listener.token)
            # The peer is gone; main has not read its end yet.
            with pytest.raises(ipcbus.ConnectionClosedError):
                while sent < 10_000:
                    await contents.send("big", b"x" * (WRITE_AT + 1))
                    sent += 1
    assert sent < 100, sent
    assert len([r for r in caplog.records if r.name == "asyncio"]) < 10


class _NeedsTheLibrary:
    """A reader that, like an endpoint, asks anyio which library runs (to start a task)."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.ended = anyio.Event()
        self.arrived = anyio.Event()

    def receive_window(self) -> memoryview | None:
        return None

    def received(self, data: bytes) -> bool:
        anyio.get_cancelled_exc_class()  # raises if anyio cannot tell the library
        self.got.append(data)
        self.arrived.set()
        return False

    def received_into(self, nbytes: int) -> bool:  # pragma: no cover - no windows given
        raise AssertionError

    def read_ended(self) -> None:
        anyio.get_cancelled_exc_class()
        self.ended.set()


async def test_reads_resumed_from_any_task_still_know_their_library() -> None:
    """The loop's read callback runs in the context of whoever last resumed
    reading; one resumed from a plain task (no library named) must still let
    the reader start tasks, for data and for the end of the stream alike."""
    stream, peer = await _pair()
    reader = _NeedsTheLibrary()
    with peer, anyio.fail_after(5):
        stream.deliver_to(reader)
        stream.pause_reading()
        stream.resume_reading()  # from this test's task
        peer.sendall(b"after resume")
        await reader.arrived.wait()
        assert reader.got == [b"after resume"]
        stream.pause_reading()
        stream.resume_reading()
        peer.close()
        await reader.ended.wait()
    await stream.aclose()


async def test_closing_forcefully_closes_the_socket_of_a_peer_that_stopped_reading() -> None:
    """``anyio.aclose_forcefully`` closes in a cancelled scope: the wait for the
    unsent bytes ends at once, and the socket must be closed all the same (it was
    left open for as long as the peer kept its end, one descriptor per peer)."""
    stream, peer = await _pair()
    with peer:  # the peer never reads
        fd = stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        stream.try_write(b"x" * (8 * 1024 * 1024))  # more than the kernel takes
        assert stream.unsent() > 0
        with anyio.fail_after(5):
            await anyio.aclose_forcefully(stream)
            lost = stream._protocol.closed
            assert lost is not None
            await lost  # the transport has let go of the socket
        with pytest.raises(OSError):
            os.fstat(fd)  # closed: the descriptor is free
