"""Message ports over real sockets and renderer processes (SPEC section 4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import ipcbus
from ipcbus import MessageChannelMain, MessagePortMain, SerializationError

from .helpers import running_main, spawn_script

# A renderer that echoes every message on every port main gives it, and
# reports what it saw on the "report" channel.
ECHO = """
import anyio, ipcbus

r = ipcbus.IpcRenderer()

@r.on("port")
async def on_port(event, tag):
    port = event.ports[0]

    @port.on("message")
    async def echo(ev):
        await r.send("report", [tag, "got", ev.data])
        port.post_message(["echo", ev.data])

    @port.on("close")
    async def closed():
        await r.send("report", [tag, "close"])

    port.start()

async def main():
    async with r.connect():
        await r.wait_closed()

anyio.run(main)
"""


@asynccontextmanager
async def reports(
    ipc_main: ipcbus.IpcMain, channel: str = "report"
) -> AsyncIterator[anyio.abc.ObjectReceiveStream[Any]]:
    """Everything renderers send on ``channel``, in arrival order."""
    send, receive = anyio.create_memory_object_stream[Any](1000)

    def listener(event: ipcbus.IpcMainEvent, value: Any) -> None:
        send.send_nowait(value)

    ipc_main.on(channel, listener)
    with send, receive:
        yield receive


async def next_event(port: MessagePortMain) -> Any:
    async for event in port:
        return event.data
    raise AssertionError("the port closed")


# ---- main <-> renderer ------------------------------------------------------


async def test_a_port_from_main_reaches_a_renderer_and_answers(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            contents = await spawn_script(ipc_main, tmp_path, ECHO)
            channel = MessageChannelMain()
            await contents.post_message("port", "r1", [channel.port2])
            for i in range(3):
                channel.port1.post_message({"n": i})  # before start: queued, not lost
            answers = []
            async for event in channel.port1:
                answers.append(event.data)
                if len(answers) == 3:
                    break
            assert answers == [["echo", {"n": 0}], ["echo", {"n": 1}], ["echo", {"n": 2}]]
            assert [await seen.receive() for _ in range(3)] == [
                ["r1", "got", {"n": i}] for i in range(3)
            ]


async def test_messages_posted_before_start_are_kept_on_both_sides(tmp_path: Path) -> None:
    source = """
    import anyio, ipcbus
    r = ipcbus.IpcRenderer()
    held = []

    @r.on("port")
    async def on_port(event):
        port = held.append(event.ports[0]) or event.ports[0]
        for i in range(5):
            port.post_message(i)          # main has not started its end yet
        await r.send("posted")

    @r.on("start")
    async def start():
        port = held[0]
        got = []
        async for ev in port:             # iterating starts the port
            got.append(ev.data)
            if len(got) == 3:
                break
        await r.send("report", got)

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """.replace("async def start():", "async def start(event):").replace(
        "async def on_port(event):", "async def on_port(event, _):"
    )
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            posted = anyio.Event()
            ipc_main.on("posted", lambda event: posted.set())
            contents = await spawn_script(ipc_main, tmp_path, source)
            channel = MessageChannelMain()
            await contents.post_message("port", None, [channel.port2])
            for i in range(3):
                channel.port1.post_message(f"m{i}")  # the renderer has not started either
            await posted.wait()
            got = []
            async for event in channel.port1:
                got.append(event.data)
                if len(got) == 5:
                    break
            assert got == [0, 1, 2, 3, 4]
            await contents.send("start")
            assert await seen.receive() == ["m0", "m1", "m2"]


async def test_a_renderer_created_channel_reaches_main(tmp_path: Path) -> None:
    source = """
    import anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            channel = ipcbus.MessageChannelMain()
            channel.port1.post_message("before")       # local, queued at port2
            await r.post_message("take", {"from": r.id}, [channel.port2])
            channel.port1.post_message("after")        # now through main
            async for ev in channel.port1:
                await r.send("report", ev.data)
                break
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            taken: list[tuple[Any, list[MessagePortMain]]] = []
            arrived = anyio.Event()

            @ipc_main.on("take")
            def take(event: ipcbus.IpcMainEvent, message: Any) -> None:
                taken.append((message, event.ports))
                arrived.set()

            contents = await spawn_script(ipc_main, tmp_path, source)
            await arrived.wait()
            message, ports = taken[0]
            assert message == {"from": contents.id}
            assert len(ports) == 1 and isinstance(ports[0], MessagePortMain)
            port = ports[0]
            assert [await next_event(port), await next_event(port)] == ["before", "after"]
            port.post_message(["back", 1])
            assert await seen.receive() == ["back", 1]


# ---- renderer <-> renderer --------------------------------------------------


async def test_two_renderers_talk_over_a_channel_main_created(tmp_path: Path) -> None:
    source = """
    import sys, anyio, ipcbus
    r = ipcbus.IpcRenderer()
    me = sys.argv[1]

    @r.on("port")
    async def on_port(event, first):
        port = event.ports[0]

        @port.on("message")
        async def message(ev):
            await r.send("report", [me, ev.data])
            if ev.data[1] < 3:
                port.post_message([me, ev.data[1] + 1])

        port.start()
        if first:
            port.post_message([me, 0])

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            a = await spawn_script(ipc_main, tmp_path, source, "a")
            b = await spawn_script(ipc_main, tmp_path, source, "b")
            channel = MessageChannelMain()
            await b.post_message("port", False, [channel.port2])
            await a.post_message("port", True, [channel.port1])
            got = [await seen.receive() for _ in range(4)]
            assert got == [["b", ["a", 0]], ["a", ["b", 1]], ["b", ["a", 2]], ["a", ["b", 3]]]


async def test_a_port_forwarded_from_one_renderer_to_another(tmp_path: Path) -> None:
    """R1 creates a channel and streams on one end while the other end travels
    R1 -> main -> R2 -> main -> R3; R3 must see every message, in order."""
    count = 500
    producer = f"""
    import anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            channel = ipcbus.MessageChannelMain()
            await r.post_message("give", None, [channel.port2])
            for i in range({count}):
                channel.port1.post_message(i)
                if i % 50 == 0:
                    await anyio.sleep(0)   # let frames go while the end travels
            async for ev in channel.port1:
                await r.send("report", ["producer", ev.data])
                break
            await r.wait_closed()
    anyio.run(main)
    """
    hop = """
    import anyio, ipcbus
    r = ipcbus.IpcRenderer()

    @r.on("hop")
    async def hop(event):
        await r.invoke("noop")              # messages for the end pile up meanwhile
        await r.post_message("hop-back", None, event.ports)

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """.replace("async def hop(event):", "async def hop(event, _):")
    consumer = f"""
    import anyio, ipcbus
    r = ipcbus.IpcRenderer()

    @r.on("take")
    async def take(event, _):
        port = event.ports[0]
        got = []
        async for ev in port:
            got.append(ev.data)
            if len(got) == {count}:
                break
        port.post_message("thanks")
        await r.send("report", ["consumer", got])

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(30):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            ipc_main.handle("noop", lambda event: None)
            r2 = await spawn_script(ipc_main, tmp_path, hop)
            r3 = await spawn_script(ipc_main, tmp_path, consumer)

            @ipc_main.on("give")
            async def give(event: ipcbus.IpcMainEvent, _: Any) -> None:
                await r2.post_message("hop", None, event.ports)

            @ipc_main.on("hop-back")
            async def hop_back(event: ipcbus.IpcMainEvent, _: Any) -> None:
                await r3.post_message("take", None, event.ports)

            await spawn_script(ipc_main, tmp_path, producer)
            results = dict([await seen.receive(), await seen.receive()])
            assert results["consumer"] == list(range(count))
            assert results["producer"] == "thanks"
            assert len(ipc_main._ports) == 2  # the channel's two ends; nothing left over


async def test_ports_travel_inside_port_messages(tmp_path: Path) -> None:
    source = """
    import anyio, ipcbus
    r = ipcbus.IpcRenderer()

    @r.on("port")
    async def on_port(event, _):
        port = event.ports[0]
        async for ev in port:
            inner = ev.ports[0]
            inner.post_message(["via inner", ev.data])
            mine = ipcbus.MessageChannelMain()
            port.post_message("here is mine", [mine.port2])
            async for answer in mine.port1:
                await r.send("report", answer.data)
                break

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            contents = await spawn_script(ipc_main, tmp_path, source)
            outer, inner = MessageChannelMain(), MessageChannelMain()
            await contents.post_message("port", None, [outer.port2])
            outer.port1.post_message("take this", [inner.port2])
            assert await next_event(inner.port1) == ["via inner", "take this"]
            async for event in outer.port1:
                assert event.data == "here is mine"
                event.ports[0].post_message("hello yours")
                break
            assert await seen.receive() == "hello yours"


# ---- closing ----------------------------------------------------------------


async def test_close_emits_close_on_both_ends_across_renderers(tmp_path: Path) -> None:
    closer = """
    import anyio, ipcbus
    r = ipcbus.IpcRenderer()

    @r.on("port")
    async def on_port(event, tag):
        port = event.ports[0]

        @port.on("close")
        async def closed():
            await r.send("report", [tag, "close"])
            port.post_message("after close")      # a silent no-op

        port.start()
        port.close()
        port.close()                              # idempotent

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            echo = await spawn_script(ipc_main, tmp_path, ECHO)
            closing = await spawn_script(ipc_main, tmp_path, closer)
            channel = MessageChannelMain()
            await echo.post_message("port", "echo", [channel.port1])
            await closing.post_message("port", "closer", [channel.port2])
            got = {tuple(await seen.receive()), tuple(await seen.receive())}
            assert got == {("echo", "close"), ("closer", "close")}
            assert len(ipc_main._ports) == 0


async def test_close_in_main_reaches_the_renderer_and_local_pairs_close_too(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            contents = await spawn_script(ipc_main, tmp_path, ECHO)
            channel = MessageChannelMain()
            await contents.post_message("port", "r", [channel.port2])
            closes: list[str] = []
            channel.port1.on("close", lambda: closes.append("port1"))
            channel.port1.close()
            channel.port1.post_message("ignored")  # posting on a closed port: no-op
            assert await seen.receive() == ["r", "close"]
            assert closes == ["port1"]

            local = MessageChannelMain()
            done = anyio.Event()
            local.port2.on("close", done.set)
            local.port2.start()
            local.port1.close()
            await done.wait()
            local.port2.post_message("ignored")
            assert [event async for event in local.port1] == []


async def test_a_port_sent_where_nobody_listens_is_closed(tmp_path: Path) -> None:
    source = """
    import anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            channel = ipcbus.MessageChannelMain()
            closed = anyio.Event()
            channel.port1.on("close", closed.set)
            channel.port1.start()
            await r.post_message("nobody-listens-here", None, [channel.port2])
            await closed.wait()
            await r.send("report", "renderer saw close")
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            contents = await spawn_script(ipc_main, tmp_path, source)
            assert await seen.receive() == "renderer saw close"
            channel = MessageChannelMain()
            await contents.post_message("nobody-listens-there", None, [channel.port2])
            assert [event async for event in channel.port1] == []  # ends on "close"


async def test_a_disconnecting_renderer_closes_every_port_it_held(tmp_path: Path) -> None:
    dies = """
    import os, anyio, ipcbus
    r = ipcbus.IpcRenderer()
    held = []

    @r.on("port")
    def on_port(event, _):
        held.extend(event.ports)

    @r.on("die")
    def die(event):
        os._exit(3)                   # no Goodbye, no PortClose: a crash

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            survivor = await spawn_script(ipc_main, tmp_path, ECHO)
            victim = await spawn_script(ipc_main, tmp_path, dies)
            shared, mine = MessageChannelMain(), MessageChannelMain()
            await survivor.post_message("port", "survivor", [shared.port1])
            await victim.post_message("port", None, [shared.port2, mine.port2])
            await victim.send("die")
            assert await seen.receive() == ["survivor", "close"]
            assert [event async for event in mine.port1] == []
            await victim.wait_closed()
            assert victim.disconnect_details is not None
            assert victim.disconnect_details.exit_code == 3
            assert len(ipc_main._ports) == 0


# ---- transfers --------------------------------------------------------------


async def test_a_transferred_port_is_neutered(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            contents = await spawn_script(ipc_main, tmp_path, ECHO)
            channel = MessageChannelMain()
            await contents.post_message("port", "r", [channel.port2])
            channel.port2.post_message("into the void")  # neutered: no-op
            channel.port2.close()  # no-op, and no "close" for anyone
            assert [event async for event in channel.port2] == []
            with pytest.raises(TypeError, match=r"transfer\[0\] was already transferred"):
                await contents.post_message("port", "r", [channel.port2])
            channel.port1.post_message("still alive")
            assert await next_event(channel.port1) == ["echo", "still alive"]
            assert await seen.receive() == ["r", "got", "still alive"]


async def test_bad_transfers_raise_type_error_naming_the_index(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_script(ipc_main, tmp_path, ECHO)
            a, b, c = MessageChannelMain(), MessageChannelMain(), MessageChannelMain()
            cases: list[tuple[Any, str]] = [
                ([a.port2, 42], r"transfer\[1\] is not a MessagePortMain but int"),
                ([a.port2, c.port1, a.port2], r"transfer\[2\] is a duplicate of transfer\[0\]"),
                ("port", "transfer must be a list of MessagePortMain, not str"),
            ]
            for transfer, message in cases:
                with pytest.raises(TypeError, match=message):
                    await contents.post_message("port", None, transfer)
                with pytest.raises(TypeError, match=message):
                    b.port2.post_message(None, transfer)
            with pytest.raises(TypeError, match=r"transfer\[1\] is the port being posted on"):
                a.port1.post_message(None, [b.port1, a.port1])
            with pytest.raises(TypeError, match=r"transfer\[0\] is the other end"):
                a.port1.post_message(None, [a.port2])
            with pytest.raises(SerializationError, match="MessagePortMain"):
                a.port1.post_message(object(), [b.port1])
            # Nothing was neutered by the failed calls.
            await contents.post_message("port", "r", [a.port2, b.port1])
            with pytest.raises(TypeError, match=r"transfer\[1\] was already transferred"):
                await contents.post_message("port", None, [b.port2, a.port2])
            with pytest.raises(TypeError, match=r"transfer\[0\] was already transferred"):
                b.port2.post_message(None, [b.port1])


async def test_bad_transfers_in_a_renderer(tmp_path: Path) -> None:
    source = """
    import anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            a, b = ipcbus.MessageChannelMain(), ipcbus.MessageChannelMain()
            errors = []
            for call in (
                lambda: r.post_message("x", None, [a.port1, "no"]),
                lambda: r.post_message("x", None, [a.port1, a.port1]),
            ):
                try:
                    await call()
                except TypeError as exc:
                    errors.append(str(exc))
            try:
                a.port1.post_message(None, [b.port1, a.port1])
            except TypeError as exc:
                errors.append(str(exc))
            await r.post_message("x", None, [b.port2])
            try:
                a.port1.post_message(None, [b.port2])
            except TypeError as exc:
                errors.append(str(exc))
            await r.send("report", errors)
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            ipc_main.on("x", lambda event, _: None)
            await spawn_script(ipc_main, tmp_path, source)
            errors = await seen.receive()
            assert [e.split(" ", 2)[:2] for e in errors] == [
                ["transfer[1]", "is"],
                ["transfer[1]", "is"],
                ["transfer[1]", "is"],
                ["transfer[0]", "was"],
            ]
            assert "not a MessagePortMain but str" in errors[0]
            assert "duplicate of transfer[0]" in errors[1]
            assert "the port being posted on" in errors[2]
            assert "already transferred" in errors[3]


async def test_ports_through_connect_local_and_a_foreign_bus() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            got = anyio.Event()
            received: list[MessagePortMain] = []

            async with ipc_main.connect_local() as renderer:

                @renderer.on("port")
                def on_port(event: ipcbus.IpcRendererEvent, _: Any) -> None:
                    received.extend(event.ports)
                    got.set()

                channel = MessageChannelMain()
                contents = ipc_main.get_all_web_contents()[0]
                await contents.post_message("port", None, [channel.port2])
                await got.wait()
                with pytest.raises(TypeError, match=r"transfer\[0\] belongs to another"):
                    await contents.post_message("port", None, [received[0]])
                received[0].post_message("from the renderer side")
                assert await next_event(channel.port1) == "from the renderer side"


async def test_listeners_see_messages_in_order_plain_or_async(tmp_path: Path) -> None:
    source = """
    import anyio, ipcbus
    r = ipcbus.IpcRenderer()

    @r.on("port")
    async def on_port(event, _):
        for port in event.ports:
            for i in range(300):
                port.post_message(i)
        await r.send("report", "posted")

    async def main():
        async with r.connect():
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main() as ipc_main, reports(ipc_main) as seen:
            plain, mixed = MessageChannelMain(), MessageChannelMain()
            got_plain: list[int] = []
            got_mixed: list[tuple[str, int]] = []
            all_in = anyio.Event()
            plain.port1.on("message", lambda event: got_plain.append(event.data))
            plain.port1.start()

            @mixed.port1.on("message")
            async def first(event: ipcbus.MessageEvent) -> None:
                await anyio.lowlevel.checkpoint()
                got_mixed.append(("async", event.data))

            @mixed.port1.on("message")
            def second(event: ipcbus.MessageEvent) -> Any:
                got_mixed.append(("plain", event.data))
                if event.data == 299:
                    all_in.set()

            mixed.port1.start()
            contents = await spawn_script(ipc_main, tmp_path, source)
            await contents.post_message("port", None, [plain.port2, mixed.port2])
            assert await seen.receive() == "posted"
            await all_in.wait()
            assert got_mixed == [(kind, i) for i in range(300) for kind in ("async", "plain")]
            assert got_plain == list(range(300))


async def test_a_port_in_a_held_back_message_keeps_its_messages(tmp_path: Path) -> None:
    """Main is at max_in_flight, so the post_message waits in the backlog; the
    port's own frames, read in the same batch, must still find the port."""
    source = """
    import anyio, ipcbus
    async def main():
        async with ipcbus.connect() as r:
            await r.send("hold")                      # queued: main's only slot
            channel = ipcbus.MessageChannelMain()
            for i in range(5):
                channel.port1.post_message(i)         # queued at port2, given back
            await r.post_message("take", None, [channel.port2])  # one write for all
            for i in range(5, 10):
                channel.port1.post_message(i)         # routed by main
            await r.wait_closed()
    anyio.run(main)
    """
    with anyio.fail_after(20):
        async with running_main(max_in_flight=1) as ipc_main:
            holding, release = anyio.Event(), anyio.Event()
            taken: list[MessagePortMain] = []
            took = anyio.Event()

            @ipc_main.on("hold")
            async def hold(event: ipcbus.IpcMainEvent) -> None:
                holding.set()  # the read that brought "hold" has been dispatched
                await release.wait()

            @ipc_main.on("take")
            def take(event: ipcbus.IpcMainEvent, _: Any) -> None:
                taken.extend(event.ports)
                took.set()

            await spawn_script(ipc_main, tmp_path, source)
            await holding.wait()
            assert not took.is_set()  # "take" waits in the backlog
            release.set()
            await took.wait()
            got = []
            async for event in taken[0]:
                got.append(event.data)
                if len(got) == 10:
                    break
            assert got == list(range(10))
