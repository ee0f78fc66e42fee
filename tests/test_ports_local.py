"""``MessageChannelMain`` inside one process: the port API without a socket."""

from __future__ import annotations

import anyio
import pytest

from ipcbus import MessageChannelMain, MessageEvent, MessagePortMain, SerializationError

from .helpers import running_main


async def test_a_local_pair_delivers_in_order_after_start() -> None:
    with anyio.fail_after(5):
        async with running_main():
            channel = MessageChannelMain()
            got: list[object] = []
            done = anyio.Event()

            @channel.port2.on("message")
            def listener(event: MessageEvent) -> None:
                got.append(event.data)
                if len(got) == 3:
                    done.set()

            channel.port1.post_message((1, "tuple"))  # before start: kept
            channel.port1.post_message({"k": b"v"})
            channel.port2.start()
            channel.port1.post_message(None)
            await done.wait()
            assert got == [[1, "tuple"], {"k": b"v"}, None]  # msgpack forms, as on the wire
            assert channel.port2.listener_count("message") == 1
            channel.port2.off("message", listener)
            assert channel.port2.listener_count("message") == 0


async def test_once_remove_and_bad_event_names() -> None:
    with anyio.fail_after(5):
        async with running_main():
            channel = MessageChannelMain()
            seen: list[object] = []
            channel.port2.once("message", lambda event: seen.append(("once", event.data)))
            channel.port2.on("message", lambda event: seen.append(("on", event.data)))
            channel.port2.start()
            channel.port1.post_message(1)
            channel.port1.post_message(2)
            async for event in channel.port2:  # with listeners, iterators get copies
                if event.data == 2:
                    break
            assert seen == [("once", 1), ("on", 1), ("on", 2)]
            channel.port2.remove_all_listeners("message")
            channel.port2.remove_all_listeners()
            with pytest.raises(ValueError, match="emits 'message' and 'close'"):
                channel.port2.on("messages", print)  # type: ignore[call-overload]
            with pytest.raises(TypeError, match="must be callable"):
                channel.port2.on("message", 42)  # type: ignore[call-overload]


async def test_iterating_works_without_a_running_owner() -> None:
    # Made outside any IpcMain or connected renderer: async for drains it itself.
    channel = MessageChannelMain()
    with anyio.fail_after(5):
        channel.port1.post_message("a")
        channel.port1.post_message("b")
        channel.port1.close()
        assert [event.data async for event in channel.port2] == ["a", "b"]
        assert [event async for event in channel.port2] == []
        assert "closed" in repr(channel.port2)


async def test_a_listener_that_raises_is_logged_and_delivery_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(5):
        async with running_main():
            channel = MessageChannelMain()
            got: list[object] = []
            done = anyio.Event()

            def bad(event: MessageEvent) -> None:
                raise RuntimeError("listener bug")

            channel.port2.on("message", bad)
            channel.port2.on("message", lambda event: got.append(event.data))
            channel.port2.on("close", done.set)
            channel.port2.start()
            channel.port1.post_message(1)
            channel.port1.close()
            await done.wait()
            assert got == [1]
            assert "listener bug" in caplog.text


async def test_moving_ports_inside_one_process() -> None:
    with anyio.fail_after(5):
        async with running_main():
            carrier, cargo = MessageChannelMain(), MessageChannelMain()
            cargo.port1.post_message("waiting in the inbox")
            carrier.port1.post_message("here", [cargo.port2])
            assert repr(cargo.port2).endswith("neutered>")
            event = await _next(carrier.port2)
            moved = event.ports[0]
            assert isinstance(moved, MessagePortMain) and moved is not cargo.port2
            assert (await _next(moved)).data == "waiting in the inbox"
            moved.post_message("back")
            assert (await _next(cargo.port1)).data == "back"
            # A closed port still travels, and arrives closed.
            closed = MessageChannelMain()
            closed.port1.close()
            carrier.port1.post_message("closed one", [closed.port2])
            arrived = (await _next(carrier.port2)).ports[0]
            assert [e async for e in arrived] == []
            arrived.post_message("nothing happens")


async def test_unencodable_messages_fail_at_the_caller() -> None:
    channel = MessageChannelMain()
    with pytest.raises(SerializationError, match=r"the message\[0\]: objects of type builtins"):
        channel.port1.post_message([object()])


async def _next(port: MessagePortMain) -> MessageEvent:
    async for event in port:
        return event
    raise AssertionError("closed")


def test_an_idle_port_holds_no_inbox_of_its_own() -> None:
    """A port makes its inbox with the first message queued (a deque is 760 bytes,
    more than the rest of a port): an idle one stays under 1 KiB."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        channels = [MessageChannelMain() for _ in range(2000)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    per_port = grown / (2 * len(channels))
    assert per_port < 1024, f"{per_port:.0f} bytes per idle port"
    assert all(channel.port1._inbox is None for channel in channels)
