"""``MessageChannelMain`` in a plain coroutine, with no ``IpcMain`` running, on asyncio and trio.

Modelled on Electron's ``describe('MessageChannelMain')`` cases in
spec/api-ipc-spec.ts: in Electron these work anywhere in main. Listeners are
used on purpose (``async for`` drained by itself before; listeners never ran).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import ipcbus
from ipcbus import MessageChannelMain, MessageEvent, MessagePortMain

LOOPS = ["asyncio", "trio"]


def run_on(loop: str, scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        with anyio.fail_after(10):
            await scenario()

    anyio.run(bounded, backend=loop)


async def once_message(port: MessagePortMain) -> MessageEvent:
    """Electron's ``await once(port, 'message')``: through a listener, not ``async for``."""
    got: list[MessageEvent] = []
    done = anyio.Event()

    def listener(event: MessageEvent) -> None:
        got.append(event)
        done.set()

    port.once("message", listener)
    await done.wait()
    return got[0]


def close_seen(port: MessagePortMain) -> anyio.Event:
    seen = anyio.Event()
    port.on("close", seen.set)
    return seen


@pytest.mark.parametrize("loop", LOOPS)
def test_can_send_messages_within_the_process(loop: str) -> None:
    async def scenario() -> None:
        channel = MessageChannelMain()
        channel.port2.post_message("hello")
        channel.port1.start()
        assert (await once_message(channel.port1)).data == "hello"

    run_on(loop, scenario)


SUPPORTED = [
    None,
    42,
    False,
    [],
    "hello",
    {"hello": "goodbye"},
    b"\x00bytes",
    3.5,
    -(2**63),
    [1, ["nested", {"k": None}]],
    dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
]


@pytest.mark.parametrize("loop", LOOPS)
def test_supported_values_round_trip_through_a_port(loop: str) -> None:
    async def scenario() -> None:
        channel = MessageChannelMain()
        got: list[Any] = []
        done = anyio.Event()

        @channel.port1.on("message")
        def listener(event: MessageEvent) -> None:
            got.append(event.data)
            if len(got) == len(SUPPORTED) + 1:
                done.set()

        channel.port1.start()
        for value in SUPPORTED:
            channel.port2.post_message(value)
        channel.port2.post_message(("a", "tuple"))  # arrives as a list, as with send
        await done.wait()
        assert got == [*SUPPORTED, ["a", "tuple"]]

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_async_listeners_run_in_order(loop: str) -> None:
    async def scenario() -> None:
        channel = MessageChannelMain()
        got: list[int] = []
        done = anyio.Event()

        @channel.port2.on("message")
        async def listener(event: MessageEvent) -> None:
            await anyio.lowlevel.checkpoint()
            got.append(event.data)
            if event.data == 2:
                done.set()

        channel.port2.start()
        for i in range(3):
            channel.port1.post_message(i)
        await done.wait()
        assert got == [0, 1, 2]

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("closer", ["port1", "port2"])
def test_closing_either_end_emits_close_on_both(loop: str, closer: str) -> None:
    async def scenario() -> None:
        channel = MessageChannelMain()
        first, second = close_seen(channel.port1), close_seen(channel.port2)
        channel.port1.start()
        channel.port2.start()
        getattr(channel, closer).close()
        await first.wait()
        await second.wait()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("closed", ["sender", "receiver"])
def test_posting_to_a_closed_channel_is_a_no_op(loop: str, closed: str) -> None:
    """Electron: "can send messages to a closed port" and "... whose remote end is closed"."""

    async def scenario() -> None:
        channel = MessageChannelMain()
        channel.port2.start()

        @channel.port2.on("message")
        def unexpected(event: MessageEvent) -> None:
            raise AssertionError("unexpected message received")

        closed_seen = close_seen(channel.port2)
        (channel.port1 if closed == "sender" else channel.port2).close()
        channel.port1.post_message("hello")  # nothing raised, nothing delivered
        await closed_seen.wait()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_port_passed_over_another_port_works(loop: str) -> None:
    """Electron: "can be passed over another channel" (matryoshka), within the process."""

    async def scenario() -> None:
        carrier, cargo = MessageChannelMain(), MessageChannelMain()
        carrier.port1.post_message(None, [cargo.port2])
        cargo.port1.post_message("matryoshka")
        carrier.port2.start()
        arrived = (await once_message(carrier.port2)).ports
        assert len(arrived) == 1
        moved = arrived[0]
        moved.start()
        assert (await once_message(moved)).data == "matryoshka"
        moved.post_message("back")  # and the other way
        cargo.port1.start()
        assert (await once_message(cargo.port1)).data == "back"
        gone = close_seen(cargo.port1)
        moved.close()
        await gone.wait()

    run_on(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_port_made_under_a_main_that_stopped_keeps_delivering(loop: str) -> None:
    async def scenario() -> None:
        async with ipcbus.IpcMain(shutdown_grace=1.0):
            channel = MessageChannelMain()  # hosted by this IpcMain...
        channel.port2.post_message("after")  # ...which is gone now
        channel.port1.start()
        assert (await once_message(channel.port1)).data == "after"

    run_on(loop, scenario)


def test_start_without_an_event_loop_raises_instead_of_staying_silent() -> None:
    channel = MessageChannelMain()
    channel.port1.on("message", print)  # listeners may be registered anywhere
    errors: list[BaseException] = []

    def in_a_plain_thread() -> None:
        try:
            channel.port1.start()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=in_a_plain_thread)
    thread.start()
    thread.join(10)
    assert len(errors) == 1
    assert "start() needs a running event loop" in str(errors[0])
    with pytest.raises(RuntimeError, match="needs a running event loop"):
        channel.port2.start()


def test_on_a_started_port_without_an_event_loop_raises() -> None:
    channel = MessageChannelMain()

    async def start_it() -> None:
        channel.port1.start()

    anyio.run(start_it)
    with pytest.raises(RuntimeError, match=r"on\(\) needs a running event loop"):
        channel.port1.on("message", print)
