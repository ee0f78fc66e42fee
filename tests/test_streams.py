"""Streams: async-generator handlers over real sockets (SPEC section 9)."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import ipcbus
from ipcbus import ConnectionClosedError, RemoteError

from .helpers import running_main, spawn_script
from .test_ports import reports

# A renderer that iterates main's streams as main tells it to and reports
# what it got (or the error) on "report".
CONSUMER = """
import anyio, ipcbus
r = ipcbus.IpcRenderer()

@r.on("consume")
async def consume(event, channel, args, limit, how):
    got = []
    try:
        if how == "async with":
            async with r.stream(channel, *args) as stream:
                async for value in stream:
                    got.append(value)
                    if len(got) == limit:
                        break
        elif how == "cancel":
            with anyio.move_on_after(0.2):
                async for value in r.stream(channel, *args):
                    got.append(value)
        else:
            async for value in r.stream(channel, *args):
                got.append(value)
                if len(got) == limit:
                    break
        await r.send("report", ["ok", got])
    except ipcbus.IpcError as exc:
        await r.send("report", [type(exc).__name__, got, str(exc)])

async def main():
    async with r.connect():
        await r.wait_closed()
anyio.run(main)
"""


async def test_a_renderer_streams_what_main_yields(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:

            @ipc_main.handle("count")
            async def count(event: ipcbus.IpcMainInvokeEvent, n: int) -> AsyncIterator[int]:
                assert event.sender.id in (a.id, b.id)
                for i in range(n):
                    yield i

            a = await spawn_script(ipc_main, tmp_path, CONSUMER)
            b = await spawn_script(ipc_main, tmp_path, CONSUMER)
            await a.send("consume", "count", [100], None, "plain")
            await b.send("consume", "count", [7], None, "plain")
            results = sorted([await seen.receive(), await seen.receive()], key=len)
            assert sorted(result[1] for result in results) == [
                list(range(7)),
                list(range(100)),
            ]


async def test_main_streams_what_a_renderer_yields(tmp_path: Path) -> None:
    producer = """
    import anyio, ipcbus
    r = ipcbus.IpcRenderer()

    @r.handle("letters")
    async def letters(event, word):
        try:
            for letter in word:
                yield letter
            if word == "boom":
                raise ValueError("boom")
        finally:
            await r.send("report", ["closed", word])

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            contents = await spawn_script(ipc_main, tmp_path, producer)
            assert [x async for x in contents.stream("letters", "abc")] == ["a", "b", "c"]
            assert await seen.receive() == ["closed", "abc"]
            got = []
            with pytest.raises(RemoteError) as info:
                async for letter in contents.stream("letters", "boom"):
                    got.append(letter)
            assert got == ["b", "o", "o", "m"]
            assert str(info.value) == "Error invoking remote method 'letters': ValueError: boom"
            assert info.value.remote_traceback is not None
            assert await seen.receive() == ["closed", "boom"]
            # Breaking out (async with) closes the generator in the renderer.
            async with contents.stream("letters", "xyz" * 100) as stream:
                async for letter in stream:
                    assert letter == "x"
                    break
            assert await seen.receive() == ["closed", "xyz" * 100]


async def test_a_slow_consumer_pauses_the_producer_and_memory_stays_flat(
    tmp_path: Path,
) -> None:
    window, chunk, taken = 8, 256 * 1024, 30
    slow = f"""
    import resource, anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            rss = []
            n = 0
            async with r.stream("chunks", window={window}) as stream:
                async for data in stream:
                    n += 1
                    assert len(data) == {chunk}
                    await anyio.sleep(0.01)    # the slow consumer under test
                    if n in (5, {taken}):
                        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                        rss.append(await r.invoke("produced"))
                    if n == {taken}:
                        break
            await r.send("report", rss)
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(30):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            produced = 0
            closed = anyio.Event()
            in_use: list[int] = []  # main's traced memory when items 5 and 30 were read

            @ipc_main.handle("produced")
            def report_produced(event: ipcbus.IpcMainInvokeEvent) -> int:
                in_use.append(tracemalloc.get_traced_memory()[0])
                return produced

            @ipc_main.handle("chunks")
            async def chunks(event: ipcbus.IpcMainInvokeEvent) -> AsyncIterator[bytes]:
                nonlocal produced
                try:
                    while True:  # as fast as it is allowed to go
                        produced += 1
                        yield bytes(chunk)
                finally:
                    closed.set()

            tracemalloc.start()
            try:
                await spawn_script(ipc_main, tmp_path, slow)
                rss_at_5, produced_at_5, rss_at_end, produced_at_end = await seen.receive()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            await closed.wait()  # leaving the async with closed the generator here
            # The generator ran at most a window ahead of the consumer ...
            assert produced_at_5 <= 5 + window
            assert produced_at_end <= taken + window
            assert produced <= taken + window
            # ... so memory stayed flat: main held no more at item 30 than at item 5
            # (give or take a window), its peak is a few copies of a window of
            # chunks (the generator's, the frame's, the transport's), whatever
            # the number of items; and the renderer's peak RSS did not grow
            # from item 5 to item 30.
            assert in_use[1] - in_use[0] < window * chunk
            assert peak < (window + 4) * chunk * 4
            assert rss_at_end - rss_at_5 < 8 * 1024  # KiB: under 8 MiB


async def test_breaking_or_cancelling_closes_the_generator_in_main(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            closed: list[str] = []
            finished = anyio.Event()

            @ipc_main.handle("forever")
            async def forever(event: ipcbus.IpcMainInvokeEvent, tag: str) -> AsyncIterator[int]:
                i = 0
                try:
                    while True:
                        yield i
                        i += 1
                        if tag == "cancel":
                            await anyio.sleep(0.01)
                finally:
                    closed.append(tag)
                    if len(closed) == 3:
                        finished.set()

            contents = await spawn_script(ipc_main, tmp_path, CONSUMER)
            await contents.send("consume", "forever", ["break"], 3, "plain")
            assert await seen.receive() == ["ok", [0, 1, 2]]
            await contents.send("consume", "forever", ["async with"], 2, "async with")
            assert await seen.receive() == ["ok", [0, 1]]
            await contents.send("consume", "forever", ["cancel"], None, "cancel")
            status, got = await seen.receive()
            assert status == "ok" and got == list(range(len(got)))
            await finished.wait()
            assert sorted(closed) == ["async with", "break", "cancel"]
            assert contents._endpoint is not None
            await contents._endpoint.wait_idle()  # nothing left running in main


async def test_stream_errors_reach_the_consumer(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:

            @ipc_main.handle("fails")
            async def fails(event: ipcbus.IpcMainInvokeEvent) -> AsyncIterator[int]:
                yield 1
                raise KeyError("gone")

            @ipc_main.handle("odd")
            async def odd(event: ipcbus.IpcMainInvokeEvent) -> AsyncIterator[Any]:
                yield object()

            ipc_main.handle("plain", lambda event: 42)

            @ipc_main.handle("typed")
            async def typed(event: ipcbus.IpcMainInvokeEvent, n: int) -> AsyncIterator[int]:
                yield n

            contents = await spawn_script(ipc_main, tmp_path, CONSUMER)
            expected = [
                ("fails", [], ["RemoteError", [1]], "KeyError: 'gone'"),
                ("odd", [], ["RemoteError", []], "builtins.object cannot be sent"),
                (
                    "plain",
                    [],
                    ["RemoteError", []],
                    "TypeError: the handler for 'plain' returned int",
                ),
                ("missing", [], ["NoHandlerError", []], "No handler registered for 'missing'"),
                ("typed", ["x"], ["ValidationError", []], "Expected `int`, got `str`"),
            ]
            for channel, args, head, message in expected:
                await contents.send("consume", channel, args, None, "plain")
                report = await seen.receive()
                assert report[:2] == head
                assert message in report[2]


async def test_a_stream_ends_with_connection_closed_when_the_renderer_dies(
    tmp_path: Path,
) -> None:
    dying = """
    import os, anyio, ipcbus
    r = ipcbus.IpcRenderer()

    @r.handle("then-die")
    async def then_die(event):
        yield "last words"
        await r.invoke("noop")   # a round trip: what was queued before it has left
        os._exit(1)

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("noop", lambda event: None)
            contents = await spawn_script(ipc_main, tmp_path, dying)
            got = []
            with pytest.raises(ConnectionClosedError, match="'then-die'"):
                async for value in contents.stream("then-die"):
                    got.append(value)
            assert got == ["last words"]
            with pytest.raises(ConnectionClosedError):
                contents.stream("then-die")


async def test_main_shutting_down_ends_a_renderer_stream(tmp_path: Path) -> None:
    out = tmp_path / "outcome.txt"
    consumer = """
    import sys, anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            got = []
            try:
                async for value in r.stream("stuck"):
                    got.append(value)
                    await r.send("started")
            except ipcbus.IpcError as exc:
                outcome = f"{type(exc).__name__} after {got}: {exc}"
            with open(sys.argv[1], "w") as f:
                f.write(outcome)
    anyio.run(main)
    """
    closed = anyio.Event()
    with anyio.fail_after(20):
        async with running_main(shutdown_grace=0.5) as ipc_main:
            started = anyio.Event()
            ipc_main.on("started", lambda event: started.set())

            @ipc_main.handle("stuck")
            async def stuck(event: ipcbus.IpcMainInvokeEvent) -> AsyncIterator[int]:
                try:
                    yield 1
                    await anyio.sleep_forever()
                    yield 2  # pragma: no cover
                finally:
                    closed.set()

            contents = await spawn_script(ipc_main, tmp_path, consumer, str(out))
            await started.wait()
            # Leaving the block cancels the generator after the grace period.
        assert closed.is_set()
        await contents.wait_closed()
        assert out.read_text() == (
            "RemoteError after [1]: Error invoking remote method 'stuck': "
            "CancelledError: the generator for 'stuck' was cancelled before it finished"
        )


async def test_stream_needs_a_positive_window() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            with pytest.raises(ValueError, match="window must be a positive int"):
                renderer.stream("x", window=0)
            with pytest.raises(ValueError, match="at most 2\\*\\*32, not 18446744073709551616"):
                renderer.stream("x", 3, window=2**64)  # not blamed on the argument 3
            with pytest.raises(TypeError, match="channel must be a str"):
                renderer.stream(3)  # type: ignore[arg-type]


async def test_a_handler_may_return_an_async_iterator() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:

            async def gen(n: int) -> AsyncIterator[int]:
                for i in range(n):
                    yield i * i

            @ipc_main.handle("squares")
            async def squares(event: ipcbus.IpcMainInvokeEvent, n: int) -> AsyncIterator[int]:
                return gen(n)

            assert [x async for x in renderer.stream("squares", 4)] == [0, 1, 4, 9]
            stream = renderer.stream("squares", 2)
            await stream.aclose()  # never started: nothing sent, and it stays closed
            assert [x async for x in stream] == []
            assert "finished" in repr(stream)


async def test_a_consumer_that_grants_huge_credit_and_stops_reading_holds_main_back() -> None:
    """Credit is the consumer's to give, but main must not hold what the socket
    cannot take: past the send high-water mark the generator waits, as ``send``
    does, and ``send_timeout`` drops the peer that stopped reading."""
    from ipcbus._wire import Request, RequestKind, StreamCredit

    from .faults._raw import RawPeer, frames, raw_args

    produced = 0
    gone = anyio.Event()
    reasons: list[str] = []
    async with running_main(send_timeout=1.0) as ipc_main:

        @ipc_main.handle("rows")
        async def rows(event: Any) -> AsyncIterator[bytes]:
            nonlocal produced
            blob = b"x" * 10_000
            while True:
                produced += 1
                yield blob
                await anyio.lowlevel.checkpoint()

        @ipc_main.on_disconnect
        def left(contents: ipcbus.WebContents, details: ipcbus.DisconnectDetails) -> None:
            reasons.append(details.message)
            gone.set()

        listener = await ipc_main.listen()
        with anyio.fail_after(20):
            async with RawPeer.connect(listener.address) as peer:
                await peer.handshake(listener.token)
                request = Request(1, RequestKind.STREAM, "rows", raw_args())
                await peer.send(frames(request, StreamCredit(1, 2**40)))  # then never reads
                await gone.wait()
    assert "stopped reading" in reasons[0]
    # What the socket pair and main's queue hold, not what a second of producing makes.
    assert produced < 2_000, produced


@pytest.mark.parametrize("where", ["parked at yield", "awaiting"])
async def test_a_cut_stream_runs_the_generators_finally_wherever_it_was(where: str) -> None:
    """Parked at ``yield`` it is closed (``GeneratorExit``, 5 s for its ``finally``);
    cut while it awaits, it is cancelled there, as any task: a shielded await in its
    ``finally`` still runs (docs/ports-and-streams.md, cancellation)."""
    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            awaiting, cleaned = anyio.Event(), anyio.Event()
            seen: list[str] = []

            @ipc_main.handle("cut")
            async def cut(event: ipcbus.IpcMainInvokeEvent) -> AsyncIterator[int]:
                try:
                    yield 0
                    if where == "awaiting":
                        awaiting.set()
                        await anyio.sleep_forever()
                    yield 1
                except anyio.get_cancelled_exc_class():
                    seen.append("cancelled")
                    raise
                except GeneratorExit:
                    seen.append("closed")
                    raise
                finally:
                    if where == "awaiting":
                        with anyio.CancelScope(shield=True):
                            await anyio.lowlevel.checkpoint()
                    else:
                        await anyio.lowlevel.checkpoint()
                    seen.append("cleaned up")
                    cleaned.set()

            async with renderer.stream("cut", window=1) as stream:
                async for item in stream:
                    assert item == 0
                    if where == "awaiting":
                        await awaiting.wait()
                    break
            await cleaned.wait()
            expected = "cancelled" if where == "awaiting" else "closed"
            assert seen == [expected, "cleaned up"]
