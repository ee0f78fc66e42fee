"""Limits a peer cannot talk its way past, over real sockets (issue 10, sections 4-5).

* Port references: at most ``MAX_PORTS_PER_FRAME`` per frame; ports nobody
  takes are closed without a task each; at most ``max_open_ports`` ends of a
  renderer's own channels open in main.
* ``max_frame_size`` in the handshake: 0 or at least ``MIN_MAX_FRAME_SIZE``.
* A peer's small ``max_frame_size``: an error reply is cut to fit it; a result
  over it fails that call only. The link lives, in both directions.
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec
import pytest

import ipcbus
from ipcbus import _routedelivery
from ipcbus._admission import MAX_OPEN_STREAMS
from ipcbus._outbox import MAX_PENDING_OUTPUT
from ipcbus._portends import MAX_PARKED
from ipcbus._portparts import PortHost
from ipcbus._wire import (
    MAX_PORTS_PER_FRAME,
    MESSAGE_CUT,
    MIN_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    TRACEBACK_CUT,
    CloseCode,
    Goodbye,
    Hello,
    Message,
    PortClose,
    PortMessage,
    PortRef,
    Reply,
    Request,
    RequestKind,
    Welcome,
)

from ..helpers import running_main, spawn_script
from ._raw import Bench, RawPeer, bench, frames, raw_args, wait_until

# ---- port references -------------------------------------------------------------


def _renderer_refs(n: int) -> tuple[PortRef, ...]:
    """``n`` ends of channels a renderer created, each with its peer still there."""
    return tuple(PortRef(-(2 * i + 1), -(2 * i + 2)) for i in range(n))


async def _cut_off(setup: Bench, peer: RawPeer, renderer_id: int, *said: str) -> None:
    """``peer`` got a ``PROTOCOL_ERROR`` Goodbye saying each of ``said``, main reported
    its end as ``"protocol-error"``, and the other renderers are served."""
    goodbye = await peer.goodbye()
    assert goodbye.code is CloseCode.PROTOCOL_ERROR
    for words in said:
        assert words in goodbye.reason
    details = await setup.disconnected(renderer_id)
    assert details.reason == "protocol-error"
    await setup.check_healthy()


async def test_streams_a_peer_never_reads_are_bounded_per_connection() -> None:
    """A stream waiting for credit gives back its ``max_in_flight`` slot, so a peer
    that asks for streams and grants no credit was bounded by nothing: a task and a
    generator each (1.4 GiB of main for 3.7 MiB sent). At most ``MAX_OPEN_STREAMS``
    are served at once; each one more is refused with an error reply at once, and
    the connection and the other renderers carry on."""

    async def count(event: Any, n: int) -> Any:
        for i in range(n):
            yield i

    extra = 40
    with anyio.fail_after(20):
        async with bench() as setup:
            setup.ipc_main.handle("count", count)
            async with RawPeer.connect(setup.listener.address) as peer:
                contents = await peer.web_contents(setup.ipc_main, setup.listener.token)
                requests = MAX_OPEN_STREAMS + extra
                await peer.send(
                    frames(
                        *(
                            Request(i, RequestKind.STREAM, "count", raw_args(5))
                            for i in range(1, requests + 1)
                        )
                    )
                )
                refused = []
                while len(refused) < extra:
                    body = await peer.receive()
                    assert isinstance(body, Reply), body
                    assert not body.ok
                    refused.append(body.request_id)
                assert refused == list(range(MAX_OPEN_STREAMS + 1, requests + 1))
                info = msgspec.msgpack.decode(body.value)
                assert "too many streams open on this connection" in str(info)
                assert str(MAX_OPEN_STREAMS) in str(info)
                await setup.check_healthy()
                assert contents._endpoint is not None  # the peer is still connected
                assert contents._endpoint.dispatcher.streams == MAX_OPEN_STREAMS


def _post_on_end(poster: RawPeer, tg: anyio.abc.TaskGroup, count: int, size: int) -> anyio.Event:
    """In a task of ``tg``: ``count`` port messages ``[i, size bytes]`` on the poster's
    end -2; the event is set once the last is sent (the socket took it)."""
    posted = anyio.Event()

    async def post() -> None:
        for i in range(count):
            data = msgspec.Raw(msgspec.msgpack.encode([i, b"x" * size]))
            await poster.send(frames(PortMessage(-2, data)))
        posted.set()

    tg.start_soon(post)
    return posted


async def test_a_renderer_posting_faster_than_the_ports_holder_reads_is_paused() -> None:
    """Main relays port messages between renderers (a listener brokers a channel:
    Electron's usual way). One that posts faster than the end's holder reads must
    slow down, not grow main: past ``MAX_PENDING_OUTPUT`` unsent to the holder, main
    reads no more from the poster until the holder has taken some. Every message
    still arrives, in order. (Before, 400 MiB posted to a holder that did not read
    grew main by 400 MiB, until ``send_timeout`` cut the holder off.)"""
    count, size = 160, 64 * 1024  # 10 MiB posted in all
    with anyio.fail_after(30):
        async with bench() as setup:
            ipc_main = setup.ipc_main
            async with (
                RawPeer.connect(setup.listener.address) as poster,
                RawPeer.connect(setup.listener.address) as holder,
                anyio.create_task_group() as tg,
            ):
                await poster.handshake(setup.listener.token)
                holder_contents = await holder.web_contents(ipc_main, setup.listener.token)
                poster_contents = ipc_main.get_all_web_contents()[-2]

                def broker(event: ipcbus.IpcMainEvent) -> None:
                    tg.start_soon(holder_contents.post_message, "port", None, event.ports)

                ipc_main.on("broker", broker)
                await poster.send(frames(Message("broker", raw_args(), (PortRef(-1, -2),))))
                posted = _post_on_end(poster, tg, count, size)
                poster_endpoint = poster_contents._endpoint
                holder_endpoint = holder_contents._endpoint
                assert poster_endpoint is not None and holder_endpoint is not None
                await wait_until(lambda: poster_endpoint.dispatcher.relay_wait)
                assert not posted.is_set()  # the poster is held back...
                unsent = holder_endpoint.conn.pending_output
                assert MAX_PENDING_OUTPUT < unsent < MAX_PENDING_OUTPUT + 1024 * 1024  # ...here
                await setup.check_healthy()

                # The holder reads: everything arrives, in order, and the poster goes on.
                got = []
                while len(got) < count:
                    body = await holder.receive()
                    if isinstance(body, PortMessage):
                        got.append(msgspec.msgpack.decode(body.data)[0])
                assert got == list(range(count))
                await posted.wait()
                assert not poster_endpoint.dispatcher.relay_wait
                await setup.check_healthy()


@pytest.mark.parametrize("then", ["start", "iterate", "close", "collect", "send on"])
async def test_a_renderer_posting_to_a_port_main_does_not_read_is_paused(then: str) -> None:
    """Messages for a port main holds wait in its inbox until main's code starts it
    (Electron queues them too), and a listener that is slow lets them pile up. Past
    ``MAX_PARKED`` bytes of one renderer's messages waiting there, main reads no
    more from that renderer, until its code takes some: starts the port (listener
    or ``async for``), closes it, lets it be collected, or sends it on. (Before,
    10 MiB posted to a port nobody started grew main by 10 MiB, with no bound.)"""
    count, size = 160, 64 * 1024  # 10 MiB posted in all
    with anyio.fail_after(30):
        async with bench() as setup:
            ipc_main = setup.ipc_main
            held: list[ipcbus.MessagePortMain] = []
            ipc_main.on("port", lambda event: held.append(event.ports[0]))
            async with (
                RawPeer.connect(setup.listener.address) as poster,
                anyio.create_task_group() as tg,
            ):
                contents = await poster.web_contents(ipc_main, setup.listener.token)
                await poster.send(frames(Message("port", raw_args(), (PortRef(-1, -2),))))
                posted = _post_on_end(poster, tg, count, size)
                endpoint = contents._endpoint
                assert endpoint is not None
                await wait_until(lambda: endpoint.dispatcher.relay_wait)
                assert not posted.is_set()  # the poster is held back...
                port = held.pop()
                waiting = sum(len(item.data) for item in port._inbox or ())
                assert MAX_PARKED < waiting < MAX_PARKED + 1024 * 1024  # ...here
                await setup.check_healthy()

                got: list[int] = []
                if then == "start":
                    port.on("message", lambda event: got.append(event.data[0]))
                    port.start()
                elif then == "iterate":
                    port.start()
                    async for event in port:
                        got.append(event.data[0])
                        if len(got) == count:
                            break
                elif then == "close":
                    port.close()
                elif then == "collect":
                    del port
                    gc.collect()
                else:  # "send on": the messages waiting go on with it
                    arrived = anyio.Event()

                    def on_port(event: ipcbus.IpcRendererEvent, message: object) -> None:
                        def on_message(port_event: ipcbus.MessageEvent) -> None:
                            got.append(port_event.data[0])
                            if len(got) == count:
                                arrived.set()

                        event.ports[0].on("message", on_message)
                        event.ports[0].start()

                    setup.healthy.on("port", on_port)
                    healthy = ipc_main.get_all_web_contents()[0]
                    await healthy.post_message("port", None, [port])
                    await arrived.wait()
                await posted.wait()  # the poster went on
                assert not endpoint.dispatcher.relay_wait
                if then in ("start", "send on"):
                    await wait_until(lambda: len(got) == count)
                if then in ("start", "iterate", "send on"):
                    assert got == list(range(count))  # every message, in order
                await setup.check_healthy()


async def _post_to_a_port_main_holds(
    renderer: ipcbus.IpcRenderer, count: int, size: int
) -> ipcbus.MessageChannelMain:
    """Send main one end of a new channel ("port"), then post on the other end
    ``count`` messages ``[i, size bytes]`` (queued: a port's post does not wait)."""
    channel = ipcbus.MessageChannelMain()
    await renderer.post_message("port", None, [channel.port2])
    for i in range(count):
        channel.port1.post_message([i, b"x" * size])
    return channel


async def test_a_renderer_paused_by_a_port_main_does_not_read_can_still_leave() -> None:
    """Paused, its end of stream waits behind what it sent, which nobody reads: the
    liveness sweep asks the socket, and a peer that hung up is read to its end, so
    main learns it left (here within a tick of ``send_timeout / 4``). What it could
    not write before it gave up leaving is lost, as for any renderer that leaves
    with its writes stuck. (Before, main kept it listed for as long as its code
    did not read the port.)"""
    ipc_main = ipcbus.IpcMain(send_timeout=2.0)
    held: list[ipcbus.MessagePortMain] = []
    ipc_main.on("port", lambda event, message: held.append(event.ports[0]))
    gone = anyio.Event()
    ipc_main.on_disconnect(lambda contents, details: gone.set())
    with anyio.fail_after(30):
        async with ipc_main:
            async with ipc_main.connect_local() as renderer:
                await _post_to_a_port_main_holds(renderer, 160, 64 * 1024)
                endpoint = ipc_main.get_all_web_contents()[0]._endpoint
                assert endpoint is not None
                await wait_until(lambda: endpoint.dispatcher.paused)
                assert endpoint.dispatcher.relay_wait
            with anyio.fail_after(5):
                await gone.wait()  # main is still running: it learnt the renderer left
            assert ipc_main.get_all_web_contents() == []
            assert held  # main's code still holds the port, unread


@pytest.mark.parametrize("bulk", ["args", "channel"])
async def test_calls_read_ahead_at_max_in_flight_are_bounded_by_their_bytes(bulk: str) -> None:
    """At ``max_in_flight``, main reads on (a Cancel may come next), but holds back
    at most ``READ_AHEAD_BYTES`` (and one read) of a peer's calls, whether their
    bulk is in the arguments or in the channel name; then it stops reading, and
    the flood waits in the peer's own socket."""
    from ipcbus._admission import READ_AHEAD_BYTES

    blocker = anyio.Event()
    big = "x" * 100_000
    with anyio.fail_after(30):
        async with bench(max_in_flight=1) as setup:

            @setup.ipc_main.handle("block")
            async def block(event: Any, *args: Any) -> None:
                await blocker.wait()

            async with RawPeer.connect(setup.listener.address) as peer:
                contents = await peer.web_contents(setup.ipc_main, setup.listener.token)
                endpoint = contents._endpoint
                assert endpoint is not None

                async def flood() -> None:
                    for request_id in range(1, 401):  # 40 MB of calls
                        args = raw_args(big) if bulk == "args" else raw_args()
                        channel = "block" if bulk == "args" or request_id == 1 else big
                        await peer.send(
                            frames(Request(request_id, RequestKind.INVOKE, channel, args))
                        )

                async with anyio.create_task_group() as tg:
                    tg.start_soon(flood)
                    await wait_until(lambda: endpoint.dispatcher.paused, 10)
                    dispatcher = endpoint.dispatcher
                    # one read past the bound at most (a read is at most 256 KiB)
                    bound = READ_AHEAD_BYTES
                    assert bound <= dispatcher._held <= bound + 256 * 1024, dispatcher._held
                    assert len(dispatcher._backlog) < bound // 100_000 + 4
                    blocker.set()  # the rest is served, in turn
                    tg.cancel_scope.cancel()
            await setup.check_healthy()


async def test_calls_cancelled_while_held_back_do_not_pile_up() -> None:
    """A peer at ``max_in_flight`` that sends call after call and cancels each: the
    cancelled ones are dropped (each costs a dict lookup, not a search), and what
    the backlog keeps of them is bounded, not one entry per pair it ever sent."""
    from ipcbus._admission import BACKLOG_LIMIT
    from ipcbus._wire import Cancel

    release = anyio.Event()
    pairs = 5_000
    with anyio.fail_after(30):
        async with bench(max_in_flight=1) as setup:

            @setup.ipc_main.handle("block")
            async def block(event: Any) -> None:
                await release.wait()

            async with RawPeer.connect(setup.listener.address) as peer:
                contents = await peer.web_contents(setup.ipc_main, setup.listener.token)
                endpoint = contents._endpoint
                assert endpoint is not None
                dispatcher = endpoint.dispatcher
                call = Request(1, RequestKind.INVOKE, "block", raw_args())
                await peer.send(frames(call))
                burst = [
                    body
                    for request_id in range(2, pairs + 2)
                    for body in (
                        Request(request_id, RequestKind.INVOKE, "block", raw_args()),
                        Cancel(request_id),
                    )
                ]
                probe = pairs + 2
                await peer.send(
                    frames(*burst, Request(probe, RequestKind.INVOKE, "block", raw_args()))
                )
                await wait_until(lambda: probe in dispatcher._held_calls, 10)
                assert len(dispatcher._held_calls) == 1
                assert len(dispatcher._backlog) <= BACKLOG_LIMIT + 3, len(dispatcher._backlog)
                release.set()
            await setup.check_healthy()


@pytest.mark.parametrize("waits", ["main", "renderer"])
async def test_a_reply_behind_megabytes_of_calls_is_read_by_the_side_awaiting_it(
    waits: str,
) -> None:
    """The side that awaits a reply reads ahead past the byte bound (to 1,024 calls):
    its one handler running (``max_in_flight=1``) awaits that reply, which the peer
    sends after 20 MiB of messages. A byte bound there would wait for ever."""
    mib = b"x" * (1024 * 1024)
    got: list[int] = []
    all_in = anyio.Event()

    def chunk(event: Any, i: int, data: bytes) -> None:
        got.append(i)
        if len(got) == 20:
            all_in.set()

    with anyio.fail_after(30):
        async with running_main(max_in_flight=1 if waits == "main" else 256) as ipc_main:
            listener = await ipc_main.listen()
            renderer = ipcbus.IpcRenderer(max_in_flight=1 if waits == "renderer" else 256)
            async with renderer.connect(listener.address, token=listener.token):
                contents = ipc_main.from_id(renderer.id)
                assert contents is not None
                if waits == "main":
                    ipc_main.on("chunk", chunk)

                    @ipc_main.handle("work")
                    async def work(event: ipcbus.IpcMainInvokeEvent) -> str:
                        return str(await event.sender.invoke("fetch"))

                    @renderer.handle("fetch")
                    async def fetch(event: ipcbus.IpcRendererEvent) -> str:
                        for i in range(20):
                            await renderer.send("chunk", i, mib)
                        return "done"

                    assert await renderer.invoke("work") == "done"
                else:
                    renderer.on("chunk", chunk)

                    @renderer.handle("work")
                    async def work_here(event: ipcbus.IpcRendererEvent) -> str:
                        return str(await renderer.invoke("fetch"))

                    @ipc_main.handle("fetch")
                    async def fetch_there(event: ipcbus.IpcMainInvokeEvent) -> str:
                        for i in range(20):
                            await event.sender.send("chunk", i, mib)
                        return "done"

                    assert await contents.invoke("work") == "done"
                await all_in.wait()  # held back while the handler ran, then delivered
    assert got == list(range(20))


async def test_a_port_listener_may_await_the_renderer_that_posts() -> None:
    """The reply to main's invoke comes after what the renderer posted: while main
    awaits it, main reads on past ``MAX_PARKED`` (up to ``RELAY_HARD`` times it),
    so a listener that invokes the poster for each message does not deadlock."""
    count = 160  # 10 MiB: past MAX_PARKED, under RELAY_HARD times it
    ipc_main = ipcbus.IpcMain()
    handled: list[int] = []
    done = anyio.Event()

    def on_port(event: ipcbus.IpcMainEvent, message: object) -> None:
        port, sender = event.ports[0], event.sender

        async def on_message(port_event: ipcbus.MessageEvent) -> None:
            handled.append(await sender.invoke("ack", port_event.data[0]))
            if len(handled) == count:
                done.set()

        port.on("message", on_message)
        port.start()

    ipc_main.on("port", on_port)
    with anyio.fail_after(30):
        async with ipc_main, ipc_main.connect_local() as renderer:
            renderer.handle("ack", lambda event, i: i)
            await _post_to_a_port_main_holds(renderer, count, 64 * 1024)
            await done.wait()
    assert handled == list(range(count))


async def test_messages_left_in_a_port_keep_no_connection_alive() -> None:
    """A renderer's messages waiting in a port main holds count against it, but
    once it is gone they must not keep its connection's objects alive."""
    ipc_main = ipcbus.IpcMain()
    held: list[ipcbus.MessagePortMain] = []
    ipc_main.on("port", lambda event, message: held.append(event.ports[0]))
    ipc_main.handle("sync", lambda event: None)
    gone = anyio.Event()
    ipc_main.on_disconnect(lambda contents, details: gone.set())
    with anyio.fail_after(30):
        async with ipc_main:
            async with ipc_main.connect_local() as renderer:
                await _post_to_a_port_main_holds(renderer, 20, 1024)
                await renderer.invoke("sync")  # its reply comes after main read them
                contents = ipc_main.get_all_web_contents()[0]
                endpoint = weakref.ref(contents._endpoint)
                del contents
            await gone.wait()
            assert held and held[0]._inbox  # the messages still wait there
            gc.collect()
            assert endpoint() is None


_FLOODER = """
import anyio, ipcbus, sys

COUNT, SIZE = int(sys.argv[1]), 64 * 1024

async def main():
    async with ipcbus.connect() as renderer:
        ports, arrived, done = [], anyio.Event(), anyio.Event()
        heard = 0

        @renderer.on("port")
        def on_port(event, message):
            ports.append(event.ports[0])
            arrived.set()

        def on_message(event):
            nonlocal heard
            heard += 1
            if heard == COUNT:
                done.set()

        await renderer.invoke("ready")
        await arrived.wait()
        ports[0].on("message", on_message)
        ports[0].start()
        for _ in range(COUNT):
            ports[0].post_message(b"x" * SIZE)
            await anyio.lowlevel.checkpoint()
        await done.wait()
        await renderer.invoke("done")

anyio.run(main)
"""


async def test_two_renderers_posting_to_each_other_faster_than_they_read_both_get_through(
    tmp_path: Path,
) -> None:
    """Two renderer processes post 25 MiB each to the other through a channel main
    relays, reading what arrives meanwhile. Main stops reading one while it owes it
    more than 4 MiB; when that renderer also stopped reading main while it owed
    main as much, each waited for the other until ``send_timeout`` (30 s) dropped
    both. A renderer reads on whatever it has still to send: both get through."""
    count = 400
    with anyio.fail_after(25):
        async with running_main() as ipc_main:
            ready, done = anyio.Event(), anyio.Event()
            readied: list[int] = []
            finished: list[int] = []

            def on_ready(event: ipcbus.IpcMainInvokeEvent) -> None:
                readied.append(event.sender.id)
                if len(readied) == 2:
                    ready.set()

            def on_done(event: ipcbus.IpcMainInvokeEvent) -> None:
                finished.append(event.sender.id)
                if len(finished) == 2:
                    done.set()

            ipc_main.handle("ready", on_ready)
            ipc_main.handle("done", on_done)
            first = await spawn_script(ipc_main, tmp_path, _FLOODER, str(count))
            second = await spawn_script(ipc_main, tmp_path, _FLOODER, str(count))
            await ready.wait()
            channel = ipcbus.MessageChannelMain()
            await first.post_message("port", None, [channel.port1])
            await second.post_message("port", None, [channel.port2])
            await done.wait()
            assert sorted(finished) == sorted([first.id, second.id])
            await first.wait_closed()
            await second.wait_closed()


async def test_a_frame_with_too_many_port_refs_ends_only_that_connection() -> None:
    with anyio.fail_after(20):
        async with bench() as setup, RawPeer.connect(setup.listener.address) as peer:
            welcome = await peer.handshake(setup.listener.token)
            refs = _renderer_refs(MAX_PORTS_PER_FRAME + 1)
            await peer.send(frames(Message("ch", raw_args(None), refs)))
            await _cut_off(
                setup,
                peer,
                welcome.renderer_id,
                f"{MAX_PORTS_PER_FRAME + 1} port references",
                f"at most {MAX_PORTS_PER_FRAME}",
            )


async def test_ports_nobody_takes_are_closed_without_a_task_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """64 ports on a channel with no listener: 64 PortCloses back, and no delivery task."""
    started: list[Any] = []
    start_soon = PortHost.start_soon

    def counting(self: PortHost, fn: Any) -> bool:
        started.append(fn)
        return start_soon(self, fn)

    monkeypatch.setattr(PortHost, "start_soon", counting)
    with anyio.fail_after(20):
        async with bench() as setup, RawPeer.connect(setup.listener.address) as peer:
            await peer.handshake(setup.listener.token)
            refs = _renderer_refs(MAX_PORTS_PER_FRAME)
            await peer.send(
                frames(
                    Message("nobody-listens", raw_args(None), refs),
                    Request(1, RequestKind.INVOKE, "add", raw_args(1, 2)),
                )
            )
            closed: list[int] = []
            while not isinstance(body := await peer.receive(), Reply):
                assert isinstance(body, PortClose), body
                closed.append(body.port_id)
            # main tells this renderer that each end's peer (held here) is gone
            assert sorted(closed) == sorted(ref.peer for ref in refs)
            assert started == []
            await setup.check_healthy()


async def test_a_renderer_past_max_open_ports_is_cut_off_and_main_forgets_its_ends() -> None:
    """A peer with more ends of its own channels open in main than max_open_ports
    (here a listener keeps every port it gets, and the peer keeps the other ends) is
    disconnected with a Goodbye saying so, and main drops every end it had made for
    them once main's code lets its ports go. Without the bound each port reference
    (a few bytes) cost main about 5 KiB, for as long as the connection lived."""
    limit = 200
    kept: list[ipcbus.MessagePortMain] = []
    with anyio.fail_after(20):
        async with (
            bench(max_open_ports=limit) as setup,
            RawPeer.connect(setup.listener.address) as peer,
        ):
            setup.ipc_main.on("ch", lambda event, *args: kept.extend(event.ports))
            known = len(setup.ipc_main._ports)
            welcome = await peer.handshake(setup.listener.token)
            sent = 0
            next_wire = 1
            # Each frame: 64 ends for main, whose peers stay here: 128 open ends.
            while sent <= 4 * limit:
                refs = tuple(
                    PortRef(-(next_wire + 2 * i), -(next_wire + 2 * i + 1)) for i in range(64)
                )
                next_wire += 128
                sent += 128
                if not await peer.send(frames(Message("ch", raw_args(None), refs))):
                    break
            await _cut_off(
                setup,
                peer,
                welcome.renderer_id,
                f"more than {limit} message-port ends",
                "max_open_ports",
            )
            assert 0 < len(kept) <= limit
            kept.clear()  # collected, then closed: their peers' connection is gone
            gc.collect()
            await wait_until(lambda: len(setup.ipc_main._ports) == known)


async def test_a_renderer_that_never_acknowledges_closes_is_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Main keeps an end it closed while a renderer held it until that renderer
    acknowledges, so that frames the renderer sent before it read the close still
    find it. One that never acknowledges would grow main's table with every close:
    past MAX_UNANSWERED unanswered closes it is cut off, and main forgets its ends."""
    limit = 100
    monkeypatch.setattr(_routedelivery, "MAX_UNANSWERED", limit)
    with anyio.fail_after(20):
        async with (
            bench() as setup,
            RawPeer.connect(setup.listener.address) as peer,
        ):
            setup.ipc_main.on("ch", lambda event, *args: None)  # keeps no port
            router = setup.ipc_main._ports
            known = len(router)
            welcome = await peer.handshake(setup.listener.token)
            # Each frame: 16 ends for main, collected and closed; their peers stay
            # here, and main's closes for them are never acknowledged.
            for k in range(40):
                refs = tuple(
                    PortRef(-(32 * k + 2 * i + 1), -(32 * k + 2 * i + 2)) for i in range(16)
                )
                add = Request(k + 1, RequestKind.INVOKE, "add", raw_args(k, 1))
                await peer.send(frames(Message("ch", raw_args(None), refs), add))
                while isinstance(body := await peer.receive(), PortClose):
                    pass  # read, never answered
                if isinstance(body, Goodbye):
                    break
                assert isinstance(body, Reply), body
                assert msgspec.msgpack.decode(body.value) == k + 1
                assert len(router) - known <= 2 * limit + 32
                gc.collect()  # main's ends are collected, and closed at its next turn
            else:
                pytest.fail("a renderer that never acknowledged a close was never cut off")
            assert body.code is CloseCode.PROTOCOL_ERROR
            assert f"more than {limit} message ports closed" in body.reason
            assert "acknowledge" in body.reason
            details = await setup.disconnected(welcome.renderer_id)
            assert details.reason == "protocol-error"
            await wait_until(lambda: len(router) == known)
            await setup.check_healthy()


async def test_a_renderer_that_closes_its_ports_never_reaches_max_open_ports() -> None:
    """Ends count only while open: a renderer that sends main a port per exchange and
    closes it after stays connected far past the bound."""

    def echo(event: ipcbus.IpcMainEvent, message: Any) -> None:
        port = event.ports[0]
        port.on("message", lambda reply: port.post_message(reply.data))
        port.start()

    async def exchange(renderer: ipcbus.IpcRenderer, value: int) -> Any:
        channel = ipcbus.MessageChannelMain()
        got = anyio.Event()
        heard: list[Any] = []
        channel.port2.on("message", lambda reply: (heard.append(reply.data), got.set()))
        channel.port2.start()
        await renderer.post_message("port", None, transfer=[channel.port1])
        channel.port2.post_message(value)
        await got.wait()
        channel.port2.close()
        return heard[0]

    with anyio.fail_after(20):
        async with running_main(max_open_ports=4) as ipc_main:
            ipc_main.on("port", echo)
            ipc_main.handle("add", lambda event, a, b: a + b)
            async with ipc_main.connect_local() as renderer:
                assert [await exchange(renderer, i) for i in range(50)] == list(range(50))
                assert await renderer.invoke("add", 1, 2) == 3


@pytest.mark.parametrize("keeper_answers", [True, False])
async def test_an_end_main_forwards_is_not_charged_to_the_renderer_that_made_it(
    keeper_answers: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once main's code moves an end on, it no longer counts against its maker.
    Closed, it counts against the renderer holding it until that one acknowledges:
    a keeper that answers each close stays; one that never does is cut off past
    MAX_UNANSWERED unanswered closes. Either way the maker is not blamed."""
    limit = 4
    monkeypatch.setattr(_routedelivery, "MAX_UNANSWERED", limit)
    with anyio.fail_after(20):
        async with (
            bench(max_open_ports=limit) as setup,
            RawPeer.connect(setup.listener.address) as keeper,
        ):
            to_keeper = await keeper.web_contents(setup.ipc_main, setup.listener.token)

            async def forward(event: ipcbus.IpcMainEvent, _: Any) -> None:
                await to_keeper.post_message("take", None, transfer=event.ports)

            setup.ipc_main.on("forward", forward)
            known = len(setup.ipc_main._ports)
            for round in range(20):
                channel = ipcbus.MessageChannelMain()
                await setup.healthy.post_message("forward", None, transfer=[channel.port1])
                body = await keeper.receive()
                assert isinstance(body, Message) and body.channel == "take", body
                (taken,) = body.ports
                channel.port2.close()  # the keeper's end is told
                assert await keeper.receive() == PortClose(taken.id)
                if keeper_answers:
                    await keeper.send(frames(PortClose(taken.id)))
                elif round == limit:  # one unanswered close more than the bound
                    goodbye = await keeper.goodbye()
                    assert goodbye.code is CloseCode.PROTOCOL_ERROR
                    assert "acknowledge" in goodbye.reason
                    break
            else:
                assert keeper_answers
                await setup.check_healthy()  # the keeper's answers are all in
                assert len(setup.ipc_main._ports) == known
            await setup.check_healthy()  # the maker was not blamed


async def test_ends_a_renderer_posts_through_a_routed_port_stay_charged_to_it() -> None:
    """Main routes a renderer's port messages on to the port's peer in another
    renderer without any of main's code seeing them: the ends they carry, fresh
    channels of the sender, count against the sender while they are open, so one
    that posts channels without end to a peer that never starts its port is cut off
    instead of growing main's table."""
    limit = 8
    with anyio.fail_after(20):
        async with (
            bench(max_open_ports=limit) as setup,
            RawPeer.connect(setup.listener.address) as sender,
            RawPeer.connect(setup.listener.address) as holder,
        ):
            router = setup.ipc_main._ports
            sender_id = (await sender.handshake(setup.listener.token)).renderer_id
            holder_id = (await holder.handshake(setup.listener.token)).renderer_id
            known = len(router)
            channel = ipcbus.MessageChannelMain()
            for renderer_id, port in ((sender_id, channel.port1), (holder_id, channel.port2)):
                contents = setup.ipc_main.from_id(renderer_id)
                assert contents is not None
                await contents.post_message("port", None, transfer=[port])
            given = await sender.receive()
            assert isinstance(given, Message) and len(given.ports) == 1
            port_id = given.ports[0].id

            async def hold_and_never_start() -> None:
                while await holder.receive() is not None:
                    pass  # reads everything, answers nothing

            async with anyio.create_task_group() as tg:
                tg.start_soon(hold_and_never_start)
                out = []
                for k in range(4 * limit):
                    a, b = -(2 * k + 1), -(2 * k + 2)
                    both = [PortRef(a, b), PortRef(b, a)]
                    out.append(PortMessage(port_id, raw_args(k), both))
                await sender.send(frames(*out))
                with anyio.fail_after(5):  # not a Goodbye away: it was never cut off
                    await _cut_off(setup, sender, sender_id, f"more than {limit} message-port ends")
                # what reached the holder before the cut stays (it is the holder's
                # now to close); no more than the limit allowed
                assert len(router) - known <= 2 + limit
                tg.cancel_scope.cancel()


async def test_a_renderer_that_does_not_give_back_what_it_said_is_cut_off() -> None:
    """Main holds an end's traffic until the frames a renderer said it gives back
    (``returning``) are back, and they come right after the frame that carried the
    port: a renderer that sends another port frame first is cut off at once."""
    with anyio.fail_after(20):
        async with bench() as setup, RawPeer.connect(setup.listener.address) as peer:
            setup.ipc_main.on("take", lambda event, _: event.ports[0].start())
            welcome = await peer.handshake(setup.listener.token)
            # -1 goes to main, owing a billion frames it never sends; -2 stays here
            taking = Message("take", raw_args(None), (PortRef(-1, -2, 0, 10**9),))
            await peer.send(frames(taking, PortMessage(-2, raw_args(0))))
            await _cut_off(
                setup, peer, welcome.renderer_id, "said 1000000000 more frames would be given back"
            )


@pytest.mark.parametrize(("ends", "per_end"), [(1, 60), (4, 20)])
async def test_a_quiet_renderer_that_owes_frames_is_cut_off_past_max_held(
    ends: int, per_end: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renderer that promised frames back and then sends nothing: main holds the
    ends' traffic (here main's own posts) up to MAX_HELD frames, then cuts it off,
    which releases them, each end's in order. MAX_HELD counts over all the ends it
    owes for: four ends holding 20 frames each pass 50 together, though none does
    alone (per end, a renderer with thousands of ends could make main hold
    thousands of times MAX_HELD)."""
    monkeypatch.setattr(_routedelivery, "MAX_HELD", 50)
    with anyio.fail_after(20):
        async with bench() as setup, RawPeer.connect(setup.listener.address) as peer:
            got: list[list[int]] = []
            all_in = anyio.Event()

            def arrived(message: Any) -> None:
                got.append(message.data)
                if len(got) == ends * per_end:
                    all_in.set()

            def take(event: ipcbus.IpcMainEvent, _: Any) -> None:
                ports = event.ports  # both ends of each of the renderer's channels
                for k, (owed, other) in enumerate(zip(ports[::2], ports[1::2], strict=True)):
                    owed.on("message", arrived)
                    owed.start()
                    for i in range(per_end):
                        other.post_message([k, i])  # held: the renderer owes frames for ``owed``

            setup.ipc_main.on("take", take)
            welcome = await peer.handshake(setup.listener.token)
            refs: tuple[PortRef, ...] = ()
            for k in range(ends):
                a, b = -(2 * k + 1), -(2 * k + 2)
                refs += (PortRef(a, b, 0, 10**9), PortRef(b, a))
            await peer.send(frames(Message("take", raw_args(None), refs)))
            await _cut_off(setup, peer, welcome.renderer_id, "owes back did not come")
            await all_in.wait()
            for k in range(ends):
                assert [i for end, i in got if end == k] == list(range(per_end))
            assert all(end.charged is None for end in setup.ipc_main._ports._ends.values())


async def test_ends_closed_while_owed_leave_nothing_behind() -> None:
    """An end that comes owing a frame it never sends, and is closed: main forgets
    every entry it kept for it (they used to stay until the connection ended)."""
    with anyio.fail_after(20):
        async with (
            bench(max_open_ports=10) as setup,
            RawPeer.connect(setup.listener.address) as peer,
        ):

            def close_all(event: ipcbus.IpcMainEvent, _: Any) -> None:
                for port in event.ports:
                    port.close()

            setup.ipc_main.on("ch", close_all)
            router = setup.ipc_main._ports
            await peer.handshake(setup.listener.token)
            out = []
            for k in range(500):
                wire = -(2 * k + 1)
                owing = PortRef(wire, wire - 1, 0, 1)
                out += [Message("ch", raw_args(None), (owing,)), PortClose(wire - 1)]
            await peer.send(frames(*out, Request(1, RequestKind.INVOKE, "add", raw_args(1, 2))))
            while not isinstance(await peer.receive(), Reply):
                pass  # main's PortCloses; its reply comes after all of the above
            assert len(router._wires) < 10
            assert sum(map(len, router._owing.values())) < 10


def test_max_open_ports_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_open_ports"):
        ipcbus.IpcMain(max_open_ports=0)


async def test_post_message_refuses_more_ports_than_a_frame_may_carry() -> None:
    with anyio.fail_after(20):
        async with bench() as setup:
            contents = setup.ipc_main.from_id(setup.healthy.id)
            assert contents is not None
            channels = [ipcbus.MessageChannelMain() for _ in range(MAX_PORTS_PER_FRAME + 1)]
            transfer = [channel.port1 for channel in channels]
            with pytest.raises(ValueError, match=f"at most {MAX_PORTS_PER_FRAME}"):
                await setup.healthy.post_message("ch", None, transfer=transfer)
            with pytest.raises(ValueError, match=f"at most {MAX_PORTS_PER_FRAME}"):
                await contents.post_message("ch", None, transfer=transfer)
            with pytest.raises(ValueError, match=f"at most {MAX_PORTS_PER_FRAME}"):
                channels[0].port2.post_message(None, transfer=[*transfer[1:], channels[1].port2])
            # nothing was neutered: the ports still work
            got = anyio.Event()
            channels[0].port2.on("message", lambda event: got.set())
            channels[0].port2.start()
            channels[0].port1.post_message("still here")
            await got.wait()
            await setup.check_healthy()


# ---- max_frame_size in the handshake ----------------------------------------------


@pytest.mark.parametrize("limit", [1, -1, MIN_MAX_FRAME_SIZE - 1])
async def test_main_refuses_a_hello_with_a_tiny_or_negative_limit(limit: int) -> None:
    with anyio.fail_after(20):
        async with bench() as setup, RawPeer.connect(setup.listener.address) as peer:
            hello = Hello(PROTOCOL_VERSION, setup.listener.token, os.getpid(), limit)
            await peer.send(frames(hello))
            bodies = await peer.until_closed()
            assert not any(isinstance(body, Welcome) for body in bodies)
            goodbye = bodies[-1]
            assert isinstance(goodbye, Goodbye)
            assert goodbye.code is CloseCode.PROTOCOL_ERROR
            assert f"max_frame_size of {limit} bytes" in goodbye.reason
            await setup.check_healthy()


async def test_a_renderer_refuses_a_welcome_with_a_tiny_limit(tmp_path: Path) -> None:
    with anyio.fail_after(10):
        path = tmp_path / "fake.sock"
        async with await anyio.create_unix_listener(path) as fake, anyio.create_task_group() as tg:

            async def fake_main() -> None:
                async with await fake.accept() as stream:
                    peer = RawPeer(stream)
                    assert isinstance(await peer.receive(), Hello)
                    await peer.send(frames(Welcome(PROTOCOL_VERSION, 1, 1)))
                    await peer.until_closed()

            tg.start_soon(fake_main)
            with pytest.raises(ipcbus.ProtocolError, match="max_frame_size of 1 bytes"):
                async with ipcbus.connect(f"unix:{path}", token="t"):
                    pass


def test_our_own_limit_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match=str(MIN_MAX_FRAME_SIZE)):
        ipcbus.IpcMain(max_frame_size=MIN_MAX_FRAME_SIZE - 1)
    with pytest.raises(ValueError, match=str(MIN_MAX_FRAME_SIZE)):
        ipcbus.IpcRenderer(max_frame_size=1)


# ---- a peer's small max_frame_size --------------------------------------------------

SMALL = 4096
BIG_ERROR = "e" * 5000  # with its traceback, well over SMALL


def _raise_big(event: object) -> None:
    raise ValueError(BIG_ERROR)


def _check_cut(caught: pytest.ExceptionInfo[ipcbus.RemoteError]) -> None:
    err = caught.value
    assert err.type_name == "ValueError"
    assert err.remote_message.startswith("e" * 100)
    assert err.remote_message.endswith(MESSAGE_CUT)
    assert err.remote_traceback is not None
    assert err.remote_traceback.startswith(TRACEBACK_CUT)
    assert err.remote_traceback.endswith("e" * 100 + "\n")  # the end is kept
    assert len(err.remote_message) + len(err.remote_traceback) < SMALL


async def _small_renderer(setup: Any) -> tuple[ipcbus.IpcRenderer, Any]:
    renderer = ipcbus.IpcRenderer(max_frame_size=SMALL)
    return renderer, renderer.connect(setup.listener.address, token=setup.listener.token)


async def test_main_handler_error_over_the_renderers_limit_is_cut_and_the_link_lives() -> None:
    with anyio.fail_after(20):
        async with bench() as setup:
            setup.ipc_main.handle("big-error", _raise_big)
            setup.ipc_main.handle("big-result", lambda event: b"r" * (2 * SMALL))
            renderer, connecting = await _small_renderer(setup)
            async with connecting:
                with pytest.raises(ipcbus.RemoteError) as caught:
                    await renderer.invoke("big-error")
                _check_cut(caught)
                with pytest.raises(ipcbus.RemoteError, match="limit of 4096 bytes") as result:
                    await renderer.invoke("big-result")
                assert result.value.type_name == "FrameTooLargeError"
                assert renderer.is_connected()
                assert await renderer.invoke("add", 1, 2) == 3
                assert renderer.id not in setup.gone  # not dropped while connected
            assert (await setup.disconnected(renderer.id)).reason == "clean-exit"
            await setup.check_healthy()


async def test_renderer_handler_error_over_mains_limit_is_cut_and_the_link_lives() -> None:
    with anyio.fail_after(20):
        async with bench(max_frame_size=SMALL) as setup:
            async with ipcbus.connect(
                setup.listener.address, token=setup.listener.token
            ) as renderer:
                renderer.handle("big-error", _raise_big)
                renderer.handle("big-result", lambda event: b"r" * (2 * SMALL))
                renderer.handle("pid", lambda event: os.getpid())
                contents = setup.ipc_main.from_id(renderer.id)
                assert contents is not None
                with pytest.raises(ipcbus.RemoteError) as caught:
                    await contents.invoke("big-error")
                _check_cut(caught)
                with pytest.raises(ipcbus.RemoteError, match="limit of 4096 bytes") as result:
                    await contents.invoke("big-result")
                assert result.value.type_name == "FrameTooLargeError"
                assert not contents.is_destroyed() and renderer.is_connected()
                assert await contents.invoke("pid") == os.getpid()
            assert (await setup.disconnected(renderer.id)).reason == "clean-exit"
            await setup.check_healthy()


# ---- a per-channel size limit, before anything is decoded ---------------------------


async def test_a_guard_limits_argument_size_per_channel_before_decoding() -> None:
    with anyio.fail_after(20):
        async with bench() as setup:
            calls: list[str] = []
            setup.ipc_main.handle("small", lambda event, blob: calls.append("small"))
            setup.ipc_main.handle("upload", lambda event, blob: calls.append("upload"))
            seen: dict[str, int] = {}

            @setup.ipc_main.add_guard
            def size_limit(event: Any) -> None:
                seen[event.channel] = event.args_size
                if event.channel != "upload" and event.args_size > 1024:
                    raise ValueError(f"{event.args_size} bytes on {event.channel!r}")

            blob = b"x" * 4096
            with pytest.raises(ipcbus.RemoteError, match="bytes on 'small'"):
                await setup.healthy.invoke("small", blob)
            await setup.healthy.invoke("upload", blob)
            await setup.healthy.invoke("small", b"x")
            assert calls == ["upload", "small"]
            assert seen["upload"] > 4096 and seen["small"] < 16


async def test_a_port_ref_with_a_negative_count_is_cut_off() -> None:
    """``received`` below 0 would make main hold all of an end's traffic for frames
    that never come, with nothing to bound it (a hostile-peer run held 13.7 MiB of
    posts as 250 MiB that way): the renderer is cut off instead."""
    with anyio.fail_after(20):
        async with bench() as setup, RawPeer.connect(setup.listener.address) as peer:
            kept: list[ipcbus.MessagePortMain] = []

            def keep(event: ipcbus.IpcMainEvent, _: Any) -> None:
                for port in event.ports:
                    port.start()
                    kept.append(port)

            setup.ipc_main.on("take", keep)
            welcome = await peer.handshake(setup.listener.token)
            lying = PortRef(-1, -2, -(2**62), 0)
            await peer.send(
                frames(Message("take", raw_args(None), (lying,)), PortMessage(-2, raw_args(1)))
            )
            await _cut_off(setup, peer, welcome.renderer_id, "negative frame count")
            assert all(port._closed for port in kept)  # its ports arrive closed


@pytest.mark.parametrize("peer_in_main", [False, True])
async def test_a_close_given_back_that_main_never_sent_is_cut_off(peer_in_main: bool) -> None:
    """Main sends a holder a close only once the end's peer is gone. A renderer that
    gives back a close main never sent for an end it moved to main would make main
    forget the end while its peer still points at it (an internal error at the
    peer's next post, or a port of main's that raises): it is cut off, and the
    peer closes as usual."""
    with anyio.fail_after(20):
        async with bench() as setup, RawPeer.connect(setup.listener.address) as peer:
            kept: list[ipcbus.MessagePortMain] = []
            setup.ipc_main.on("port", lambda event, *args: kept.extend(event.ports))
            welcome = await peer.handshake(setup.listener.token)
            refs = (PortRef(-1, -2, 0, 1),) + ((PortRef(-2),) if peer_in_main else ())
            await peer.send(
                frames(
                    Message("port", raw_args(None), refs),
                    PortClose(-1, returned=True),  # "given back": main never sent it
                    PortMessage(-2, raw_args("hi")),  # the peer, if it is still here
                )
            )
            await _cut_off(setup, peer, welcome.renderer_id, "a close main never sent")
            assert len(kept) == len(refs)
            for port in kept:
                port.post_message("after")  # does not raise
                port.close()
