"""Electron's MessagePort specs (spec/api-ipc-spec.ts, describe('MessagePort') and
describe('WebContents.ipc')), mirrored where the existing tests do not cover them.

Electron's renderer-side ``port.onmessage = fn`` starts the port implicitly;
ipcbus ports behave like Electron's ``MessagePortMain`` everywhere, so the
renderers here call ``start()`` (or iterate) explicitly.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import ipcbus
from ipcbus import (
    IpcMainEvent,
    IpcRendererEvent,
    MessageChannelMain,
    MessageEvent,
    MessagePortMain,
    SerializationError,
)

from .helpers import running_main, spawn_script


@asynccontextmanager
async def arrivals(
    registry: Any, channel: str
) -> AsyncIterator[anyio.abc.ObjectReceiveStream[tuple[Any, tuple[Any, ...]]]]:
    """``(event, args)`` of every message ``registry.on(channel)`` hears, in order."""
    send, receive = anyio.create_memory_object_stream[tuple[Any, tuple[Any, ...]]](100)

    def listener(event: Any, *args: Any) -> None:
        send.send_nowait((event, args))

    registry.on(channel, listener)
    with send, receive:
        yield receive


async def next_message(port: MessagePortMain) -> MessageEvent:
    """The next ``"message"`` event of ``port`` (starts it)."""
    async for event in port:
        return event
    raise AssertionError("the port closed")


# ---- renderer -> main ----------------------------------------------------------------


async def test_a_renderer_can_post_a_message_without_a_transfer() -> None:
    """api-ipc-spec.ts, MessagePort: it('can sent a message without a transfer')."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            async with arrivals(ipc_main, "port") as seen:
                await renderer.post_message("port", "hi")
                event, args = await seen.receive()
            assert args == ("hi",)
            assert event.ports == []
            assert event.sender.id == renderer.id


COMMUNICATE = """
import anyio, ipcbus

async def main():
    async with ipcbus.connect() as r:
        channel = ipcbus.MessageChannelMain()

        @channel.port2.on("message")
        def double(ev):
            channel.port2.post_message(ev.data * 2)

        channel.port2.start()
        await r.post_message("port", "", [channel.port1])
        await r.wait_closed()

anyio.run(main)
"""


async def test_can_communicate_between_main_and_renderer(tmp_path: Path) -> None:
    """api-ipc-spec.ts, MessagePort: it('can communicate between main and renderer')."""
    with anyio.fail_after(20):
        async with running_main() as ipc_main, arrivals(ipc_main, "port") as seen:
            contents = await spawn_script(ipc_main, tmp_path, COMMUNICATE)
            event, args = await seen.receive()
            assert args == ("",)
            assert event.sender is contents
            assert len(event.ports) == 1
            [port] = event.ports
            assert isinstance(port, MessagePortMain)
            port.start()
            port.post_message(42)
            assert (await next_message(port)).data == 84


MATRYOSHKA = """
import anyio, ipcbus

async def main():
    async with ipcbus.connect() as r:
        channel1 = ipcbus.MessageChannelMain()
        channel2 = ipcbus.MessageChannelMain()
        channel1.port2.post_message("", [channel2.port1])
        channel2.port2.post_message("matryoshka")
        await r.post_message("port", "", [channel1.port1])
        await r.wait_closed()

anyio.run(main)
"""


async def test_can_receive_a_port_from_a_renderer_over_a_message_port(tmp_path: Path) -> None:
    """api-ipc-spec.ts, MessagePort: it('can receive a port from a renderer over a
    MessagePort connection')."""
    with anyio.fail_after(20):
        async with running_main() as ipc_main, arrivals(ipc_main, "port") as seen:
            await spawn_script(ipc_main, tmp_path, MATRYOSHKA)
            event, _ = await seen.receive()
            [port1] = event.ports
            port1.start()
            inner = await next_message(port1)
            [port2] = inner.ports
            port2.start()
            assert (await next_message(port2)).data == "matryoshka"


# ---- MessageChannelMain ------------------------------------------------------------


async def test_post_message_accepts_supported_values() -> None:
    """api-ipc-spec.ts, MessageChannelMain: it('can be created') and it('should not throw
    when supported values are passed as message').

    Deliberate difference: Electron accepts ``port1.postMessage()`` with no
    message (it posts ``undefined``); SPEC section 4 makes ``message`` a required
    argument, so leaving it out is a ``TypeError`` and nothing is posted.
    """
    values: list[Any] = [None, 42, False, [], "hello", {"hello": "goodbye"}]
    with anyio.fail_after(5):
        async with running_main():
            channel = MessageChannelMain()
            assert isinstance(channel.port1, MessagePortMain)
            assert isinstance(channel.port2, MessagePortMain)
            with pytest.raises(TypeError):
                channel.port1.post_message()  # type: ignore[call-arg]
            for value in values:
                channel.port1.post_message(value)
            got = []
            async for event in channel.port2:
                got.append(event.data)
                if len(got) == len(values):
                    break
            assert got == values


BAD_TRANSFERS: list[tuple[Any, str]] = [
    (None, "transfer must be a list of MessagePortMain, not NoneType"),
    ([bytearray(10)], r"transfer\[0\] is not a MessagePortMain but bytearray"),
    (["1"], r"transfer\[0\] is not a MessagePortMain but str"),
    ([dt.datetime(2024, 1, 1)], r"transfer\[0\] is not a MessagePortMain but datetime"),
    ([None], r"transfer\[0\] is not a MessagePortMain but NoneType"),
]


async def test_post_message_rejects_invalid_transfers() -> None:
    """api-ipc-spec.ts, MessageChannelMain: it('throws an error when an invalid parameter
    is sent to postMessage') and it('throws when passing null ports'); MessagePort:
    it('throws when the transferable is invalid') for ``ipcRenderer.postMessage``.

    Electron's "Port at index 0 is not a valid port" is ipcbus's
    "transfer[0] is not a MessagePortMain but ...".
    """
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            channel = MessageChannelMain()
            for transfer, message in BAD_TRANSFERS:
                with pytest.raises(TypeError, match=message):
                    channel.port1.post_message(None, transfer)
                with pytest.raises(TypeError, match=message):
                    await renderer.post_message("port", "", transfer)
            # Nothing was posted by the failed calls.
            channel.port1.post_message("only this")
            channel.port1.post_message("end")
            got = []
            async for event in channel.port2:
                got.append(event.data)
                if event.data == "end":
                    break
            assert got == ["only this", "end"]


async def test_messages_posted_on_a_closed_port_or_to_a_closed_peer_go_nowhere() -> None:
    """api-ipc-spec.ts, MessageChannelMain: it('can send messages to a closed port') and
    it('can send messages to a port whose remote end is closed')."""
    with anyio.fail_after(5):
        async with running_main():
            unexpected: list[Any] = []
            for closing in ("port1", "port2"):
                channel = MessageChannelMain()
                closed = anyio.Event()
                channel.port2.on("message", lambda event: unexpected.append(event.data))
                channel.port2.on("close", closed.set)
                channel.port2.start()
                getattr(channel, closing).close()
                channel.port1.post_message("hello")  # no error
                await closed.wait()
                assert [event async for event in channel.port1] == []
            assert unexpected == []


async def test_iterating_a_local_port_ends_on_close_after_queued_messages() -> None:
    """api-ipc-spec.ts, MessageChannelMain: it('can send messages within the process'),
    then the other end closes: SPEC section 4, "Closing one end emits "close" on both
    ends", and docs/ports-and-streams.md, "close" on an end never started is delivered
    when it is started, after the messages before it."""
    with anyio.fail_after(5):
        async with running_main():
            channel = MessageChannelMain()
            channel.port1.post_message("hello")
            channel.port1.close()
            got = []
            with anyio.move_on_after(2) as scope:
                async for event in channel.port2:  # starts the port
                    got.append(event.data)
            assert got == ["hello"]
            assert not scope.cancelled_caught, "async for did not end on 'close'"


LAST_WORDS = """
import anyio, ipcbus

async def main():
    async with ipcbus.connect() as r:
        channel = ipcbus.MessageChannelMain()
        await r.post_message("port", None, [channel.port1])
        channel.port2.post_message("last words")
        channel.port2.close()
        await r.send("done")
        await r.wait_closed()

anyio.run(main)
"""


async def test_iterating_a_received_port_ends_on_close_after_queued_messages(
    tmp_path: Path,
) -> None:
    """api-ipc-spec.ts, MessagePort: it('can send a port to the main process'), after
    which the renderer posts once and closes its end; SPEC section 4: "Closing one end
    emits "close" on both ends"."""
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            async with arrivals(ipc_main, "port") as ports, arrivals(ipc_main, "done") as done:
                await spawn_script(ipc_main, tmp_path, LAST_WORDS)
                event, _ = await ports.receive()
                await done.receive()  # the port's message and close came before this
            [port] = event.ports
            got = []
            with anyio.move_on_after(2) as scope:
                async for message_event in port:
                    got.append(message_event.data)
            assert got == ["last words"]
            assert not scope.cancelled_caught, "async for did not end on 'close'"


async def test_close_is_emitted_on_a_started_port_without_message_listeners() -> None:
    """api-ipc-spec.ts, close event: it('is emitted when the main process closes its end
    of the port'), in one process, with a message in flight; SPEC section 4: "Closing
    one end emits "close" on both ends"."""
    with anyio.fail_after(5):
        async with running_main():
            channel = MessageChannelMain()
            closed = anyio.Event()
            channel.port2.on("close", closed.set)
            channel.port1.post_message("nobody reads this")
            channel.port1.close()
            channel.port2.start()
            with anyio.move_on_after(2):
                await closed.wait()
            assert closed.is_set()


async def test_a_port_is_not_collected_while_it_could_still_receive_messages() -> None:
    """api-ipc-spec.ts, MessageChannelMain, GC behavior: it('is not collected while it
    could still receive messages')."""
    with anyio.fail_after(5):
        async with running_main():
            got: list[Any] = []
            arrived = anyio.Event()

            def make() -> MessagePortMain:
                channel = MessageChannelMain()

                def on_message(event: MessageEvent) -> None:
                    got.append(event.data)
                    arrived.set()

                channel.port2.on("message", on_message)
                channel.port2.start()
                return channel.port1  # port2 is only reachable through its peer

            port1 = make()
            gc.collect()
            port1.post_message("hello")
            await arrived.wait()
            assert got == ["hello"]


# ---- main -> renderer ---------------------------------------------------------------


async def test_can_pass_one_end_to_a_web_contents_after_posting_to_it() -> None:
    """api-ipc-spec.ts, MessageChannelMain: it('can pass one end to a WebContents'): the
    message is posted to port2 before port2 is sent."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None

            async def on_port(event: IpcRendererEvent, message: Any) -> None:
                [port] = event.ports
                async for port_event in port:
                    await renderer.send("done", port_event.data)
                    break

            renderer.on("port", on_port)
            async with arrivals(ipc_main, "done") as seen:
                channel = MessageChannelMain()
                channel.port1.post_message("hello")
                await contents.post_message("port", None, [channel.port2])
                _, args = await seen.receive()
            assert args == ("hello",)


PASSED_OVER = """
import anyio, ipcbus
r = ipcbus.IpcRenderer()

@r.on("port")
def on_port(e1, _):
    outer = e1.ports[0]

    @outer.on("message")
    def on_outer(e2):
        inner = e2.ports[0]

        @inner.on("message")
        async def on_inner(e3):
            await r.send("done", e3.data)

        inner.start()

    outer.start()

async def main():
    async with r.connect():
        await r.wait_closed()

anyio.run(main)
"""


async def test_a_port_can_be_passed_over_another_channel(tmp_path: Path) -> None:
    """api-ipc-spec.ts, MessageChannelMain: it('can be passed over another channel'):
    port4 travels inside a message queued on port2 (not yet sent), port3 posts to
    it, then port2 goes to the renderer."""
    with anyio.fail_after(20):
        async with running_main() as ipc_main, arrivals(ipc_main, "done") as seen:
            contents = await spawn_script(ipc_main, tmp_path, PASSED_OVER)
            carrier, cargo = MessageChannelMain(), MessageChannelMain()
            carrier.port1.post_message(None, [cargo.port2])
            cargo.port1.post_message("hello")
            await contents.post_message("port", None, [carrier.port2])
            _, args = await seen.receive()
            assert args == ("hello",)


# ---- WebContents.postMessage ----------------------------------------------------------


async def test_web_contents_post_message_sends_a_message() -> None:
    """api-ipc-spec.ts, WebContents.postMessage: it('sends a message')."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            ports: list[Any] = []

            async def on_foo(event: IpcRendererEvent, message: Any) -> None:
                ports.append(event.ports)
                await renderer.send("bar", message)

            renderer.on("foo", on_foo)
            async with arrivals(ipc_main, "bar") as seen:
                await contents.post_message("foo", {"some": "message"})
                _, args = await seen.receive()
            assert args == ({"some": "message"},)
            assert ports == [[]]


async def test_web_contents_post_message_error_handling() -> None:
    """api-ipc-spec.ts, WebContents.postMessage, error handling: it('throws on missing
    channel'), it('throws on invalid channel'), it('throws on missing message'),
    it('throws on non-serializable message'), it('throws on invalid transferable list'),
    it('throws on transferring non-transferable'), it('throws when passing null ports'),
    it('throws when passing duplicate ports'), it('throws when passing ports that have
    already been neutered').

    Electron's "already neutered" reads "was already transferred" here.
    """
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            post: Any = contents.post_message
            with pytest.raises(TypeError):
                await post()
            with pytest.raises(TypeError, match="channel must be a str"):
                await post(None, "", [])
            with pytest.raises(TypeError):
                await post("channel")
            with pytest.raises(SerializationError, match=r"'channel'.*WebContents"):
                await post("channel", contents)
            with pytest.raises(TypeError, match="transfer must be a list"):
                await post("channel", "", None)
            with pytest.raises(TypeError, match=r"transfer\[0\] is not a MessagePortMain"):
                await post("channel", "", [123])
            with pytest.raises(TypeError, match=r"transfer\[0\] is not a MessagePortMain"):
                await post("foo", None, [None])
            channel = MessageChannelMain()
            with pytest.raises(TypeError, match=r"transfer\[1\] is a duplicate"):
                await post("foo", None, [channel.port1, channel.port1])
            async with arrivals(renderer, "foo") as seen:
                await post("foo", None, [channel.port1])
                with pytest.raises(TypeError, match=r"transfer\[0\] was already transferred"):
                    await post("foo", None, [channel.port1])
                event, _ = await seen.receive()
                assert len(event.ports) == 1


# ---- WebContents.ipc ------------------------------------------------------------------


async def test_web_contents_ipc_receives_post_message_with_ports() -> None:
    """api-ipc-spec.ts, WebContents.ipc: it('receives postMessage messages sent from the
    WebContents, w/ MessagePorts'); the message still cascades to ipcMain after."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            order: list[str] = []
            scoped_ports: list[Any] = []

            def scoped(event: IpcMainEvent, message: Any) -> None:
                order.append("contents.ipc")
                scoped_ports.extend(event.ports)

            contents.ipc.once("test", scoped)
            async with arrivals(ipc_main, "test") as seen:
                ipc_main.on("test", lambda event, message: order.append("ipc_main"))
                channel = MessageChannelMain()
                await renderer.post_message("test", None, [channel.port1])
                event, args = await seen.receive()
            assert args == (None,)
            assert order == ["contents.ipc", "ipc_main"]
            assert len(scoped_ports) == 1
            assert event.ports == scoped_ports  # one event, seen by both scopes
            # The port arrived live: it talks to the renderer's other end.
            scoped_ports[0].post_message("ping")
            assert (await next_message(channel.port2)).data == "ping"


async def test_ipcbus_message_port_names_are_public() -> None:
    """api-ipc-spec.ts, MessagePort: it('can send a port to the main process') checks that
    the received port is an EventEmitter; here, that it is a ``MessagePortMain`` with
    the emitter methods."""
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            async with arrivals(ipc_main, "port") as seen:
                channel = MessageChannelMain()
                await renderer.post_message("port", "hi", [channel.port1])
                event, args = await seen.receive()
            assert args == ("hi",)
            [port] = event.ports
            assert isinstance(port, ipcbus.MessagePortMain)
            for name in ("on", "once", "off", "remove_listener", "remove_all_listeners"):
                assert callable(getattr(port, name))
            assert port.listener_count("message") == 0
