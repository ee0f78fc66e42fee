"""Renderers coming and going: identity, hooks, lookup, broadcast, close, kill, shutdown."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec
import pytest

import ipcbus
from ipcbus import ConnectionClosedError, DisconnectDetails, IpcMainEvent, WebContents
from ipcbus._framing import append_frame
from ipcbus._wire import PROTOCOL_VERSION, CloseCode, Goodbye, Welcome

from .faults._raw import RawPeer
from .helpers import (
    RENDERERS,
    Blocker,
    child_env,
    running_main,
    spawn_renderer,
    spawn_script,
    wait_for,
)

QUIT_AT_ONCE = """
import anyio, ipcbus
async def main():
    async with ipcbus.connect():
        pass
anyio.run(main)
"""


def _who(event: Any) -> list[Any]:
    return [event.sender.id, event.process_id, event.channel]


# ---- identity ------------------------------------------------------------------------


async def test_sender_identity_with_two_spawned_children() -> None:
    def who_sync(event: IpcMainEvent) -> None:
        event.return_value = _who(event)

    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("who", _who)
            ipc_main.on("who-sync", who_sync)
            first = await spawn_renderer(ipc_main, "worker")
            second = await spawn_renderer(ipc_main, "worker")
            assert first.id != second.id
            assert first.id > 0
            assert second.id > 0
            assert first.process_id != second.process_id
            for contents in (first, second):
                pid, renderer_id = await contents.invoke("whoami")
                assert pid == contents.process_id
                assert renderer_id == contents.id
                assert await contents.invoke("call-main", "invoke", "who") == {
                    "ok": [contents.id, pid, "who"]
                }
                assert await contents.invoke("call-main", "send_sync", "who-sync") == {
                    "ok": [contents.id, pid, "who-sync"]
                }
                assert ipc_main.from_id(contents.id) is contents


async def test_connect_local_renderer_is_in_from_id_with_this_pid() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            assert renderer.id > 0
            contents = ipc_main.from_id(renderer.id)
            assert isinstance(contents, WebContents)
            assert contents.process_id == os.getpid()
            assert contents.id == renderer.id
            ipc_main.handle("who", _who)
            assert await renderer.invoke("who") == [renderer.id, os.getpid(), "who"]


async def test_ids_are_never_reused() -> None:
    seen: list[int] = []
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            for round_ in range(3):
                contents = await spawn_renderer(ipc_main, "worker")
                seen.append(contents.id)
                async with ipc_main.connect_local() as renderer:
                    seen.append(renderer.id)
                await contents.close()
                assert ipc_main.from_id(contents.id) is None
                if round_ == 0:
                    listener = await ipc_main.listen()
                    async with ipcbus.connect(listener.address, token=listener.token) as r:
                        seen.append(r.id)
                    await listener.aclose()
            assert len(set(seen)) == len(seen)
            assert seen == sorted(seen)
            assert all(i > 0 for i in seen)


async def test_renderer_cannot_choose_its_id() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("who", _who)
            real = renderer.id
            renderer.id = 999  # only a local attribute: main decides who is who
            assert (await renderer.invoke("who"))[0] == real
            assert ipc_main.from_id(999) is None


@pytest.mark.parametrize("scheme", ["unix", "tcp"])
async def test_renderers_connecting_to_a_listener_from_other_processes(scheme: str) -> None:
    connected: list[WebContents] = []
    both = anyio.Event()

    def on_connect(contents: WebContents) -> None:
        connected.append(contents)
        if len(connected) == 2:
            both.set()

    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.on_connect(on_connect)
            ipc_main.handle("who", _who)
            address = None if scheme == "unix" else "tcp://127.0.0.1:0"
            listener = await ipc_main.listen(address)
            assert listener.address.startswith("unix:/" if scheme == "unix" else "tcp://127.0.0.1:")
            if scheme == "tcp":
                assert not listener.address.endswith(":0")
            env = child_env(IPCBUS_ADDRESS=listener.address, IPCBUS_TOKEN=listener.token)
            argv = [sys.executable, str(RENDERERS / "worker.py")]
            async with (
                await anyio.open_process(argv, env=env, stdout=None, stderr=None) as p1,
                await anyio.open_process(argv, env=env, stdout=None, stderr=None) as p2,
            ):
                await both.wait()
                by_pid = {contents.process_id: contents for contents in connected}
                assert set(by_pid) == {p1.pid, p2.pid}
                for process in (p1, p2):
                    contents = by_pid[process.pid]
                    assert await contents.invoke("whoami") == [process.pid, contents.id]
                    assert await contents.invoke("call-main", "invoke", "who") == {
                        "ok": [contents.id, process.pid, "who"]
                    }
                    await contents.close()
                    assert contents.is_destroyed()
                    assert await process.wait() == 0
            listener.close()


# ---- hooks, lookup ---------------------------------------------------------------------


async def test_connect_and_disconnect_hooks_sync_and_async(tmp_path: Path) -> None:
    events: list[tuple[str, int, Any]] = []
    async_connected = anyio.Event()
    async_disconnected = anyio.Event()

    with anyio.fail_after(20):
        async with running_main() as ipc_main:

            @ipc_main.on_connect
            def sync_connect(contents: WebContents) -> None:
                events.append(("connect", contents.id, ipc_main.from_id(contents.id)))

            async def async_connect(contents: WebContents) -> None:
                await anyio.lowlevel.checkpoint()
                events.append(("async-connect", contents.id, None))
                async_connected.set()

            def sync_disconnect(contents: WebContents, details: DisconnectDetails) -> None:
                events.append(("disconnect", contents.id, details))

            async def async_disconnect(contents: WebContents, details: DisconnectDetails) -> None:
                await anyio.lowlevel.checkpoint()
                events.append(("async-disconnect", contents.id, details))
                async_disconnected.set()

            assert ipc_main.on_connect(async_connect) is async_connect
            assert ipc_main.on_disconnect(sync_disconnect) is sync_disconnect
            assert ipc_main.on_disconnect(async_disconnect) is async_disconnect

            contents = await spawn_script(ipc_main, tmp_path, QUIT_AT_ONCE)
            await wait_for(async_connected)
            await contents.wait_closed()
            await wait_for(async_disconnected)
            kinds = [kind for kind, _, _ in events]
            assert kinds[:2] == ["connect", "async-connect"]
            assert sorted(kinds[2:]) == ["async-disconnect", "disconnect"]
            assert all(renderer_id == contents.id for _, renderer_id, _ in events)
            assert events[0][2] is contents  # in from_id() when on_connect runs
            details = events[2][2]
            assert isinstance(details, DisconnectDetails)
            assert details.reason == "clean-exit"
            assert details.exit_code == 0
            assert contents.disconnect_details == details


async def test_what_on_connect_sends_first_arrives_before_connect_returns() -> None:
    """SPEC: on_connect runs before connect() resolves. Its first sends leave with the
    Welcome (the Welcome is not written at once), so a listener registered before
    connecting already has them when ``connect()`` returns, on every transport."""
    async with running_main() as ipc_main:

        @ipc_main.on_connect
        async def push(contents: WebContents) -> None:
            await contents.send("state", "initial")

        listener = await ipc_main.listen()
        with anyio.fail_after(20):
            for _ in range(20):
                renderer = ipcbus.IpcRenderer()
                early: list[str] = []
                renderer.on("state", lambda event, arg, early=early: early.append(arg))
                async with renderer.connect(listener.address, token=listener.token):
                    assert early == ["initial"]


async def test_a_raising_hook_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    with anyio.fail_after(5):
        async with running_main() as ipc_main:

            @ipc_main.on_connect
            def bad(contents: WebContents) -> None:
                raise RuntimeError("hook failed")

            @ipc_main.on_connect
            def good(contents: WebContents) -> None:
                ran.append("good")

            ipc_main.handle("ok", lambda event: "ok")
            async with ipc_main.connect_local() as renderer:
                assert await renderer.invoke("ok") == "ok"
            assert ran == ["good"]
            assert "hook failed" in caplog.text


async def test_crashed_child_reports_crashed_with_its_exit_code(tmp_path: Path) -> None:
    gone: list[DisconnectDetails] = []
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.on_disconnect(lambda contents, details: gone.append(details))
            contents = await spawn_script(
                ipc_main,
                tmp_path,
                """
                import os, anyio, ipcbus
                async def main():
                    async with ipcbus.connect():
                        os._exit(3)
                anyio.run(main)
                """,
            )
            await contents.wait_closed()
            assert contents.disconnect_details is not None
            assert contents.disconnect_details.reason == "crashed"
            assert contents.disconnect_details.exit_code == 3
            assert gone == [contents.disconnect_details]


async def test_get_all_web_contents_and_from_id() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            assert ipc_main.get_all_web_contents() == []
            first = await spawn_renderer(ipc_main, "worker")
            second = await spawn_renderer(ipc_main, "worker")
            async with ipc_main.connect_local() as renderer:
                local = ipc_main.from_id(renderer.id)
                assert ipc_main.get_all_web_contents() == [first, second, local]
                assert ipc_main.from_id(first.id) is first
                assert ipc_main.from_id(second.id) is second
                assert ipc_main.from_id(12345) is None
                assert ipc_main.from_id(0) is None
            assert local is not None
            await local.wait_closed()  # main notices the disconnect asynchronously
            assert ipc_main.get_all_web_contents() == [first, second]
            await first.close()
            assert ipc_main.get_all_web_contents() == [second]
            assert ipc_main.from_id(first.id) is None


# ---- broadcast -------------------------------------------------------------------------


async def test_broadcast_reaches_every_live_renderer_and_skips_closed_ones() -> None:
    pongs: list[tuple[int, tuple[Any, ...]]] = []
    two_pongs = anyio.Event()
    local_got: list[tuple[Any, ...]] = []
    local_done = anyio.Event()

    def pong(event: IpcMainEvent, *args: Any) -> None:
        pongs.append((event.sender.id, args))
        if len(pongs) == 2:
            two_pongs.set()

    def local_ping(event: ipcbus.IpcRendererEvent, *args: Any) -> None:
        local_got.append(args)
        if len(local_got) == 2:
            local_done.set()

    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.on("pong", pong)
            alive = await spawn_renderer(ipc_main, "echo")
            closed = await spawn_renderer(ipc_main, "echo")
            killed = await spawn_renderer(ipc_main, "echo")
            await closed.close()
            assert closed.is_destroyed()
            os.kill(killed.process_id, signal.SIGKILL)
            async with ipc_main.connect_local() as renderer:
                renderer.on("ping", local_ping)
                # The killed one may not be noticed yet: broadcast must not raise.
                await ipc_main.broadcast("ping", 1, "x")
                await killed.wait_closed()
                await ipc_main.broadcast("ping", 2)
                await wait_for(two_pongs)
                await wait_for(local_done)
            assert local_got == [(1, "x"), (2,)]
            assert sorted(pongs) == [(alive.id, (1, "x")), (alive.id, (2,))]
            with pytest.raises(ConnectionClosedError):
                await closed.send("ping")


async def test_broadcast_to_a_renderer_that_stops_reading_loses_and_reorders_nothing() -> None:
    """A renderer that stops reading: its copies queue behind what its transport
    holds while the others get theirs as they are written; once it reads again
    every copy arrives, in order. (``broadcast`` waits only for it, once more than
    256 KiB of its copies are unsent.)"""
    n, blob = 40, b"x" * (64 * 1024)  # 2.5 MiB each: far over every high-water mark
    got: list[int] = []
    early = anyio.Event()
    everything = anyio.Event()

    def news(event: ipcbus.IpcRendererEvent, i: int, data: bytes) -> None:
        assert data == blob
        got.append(i)
        if len(got) == 4:
            early.set()
        if len(got) == n:
            everything.set()

    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            async with (
                RawPeer.connect(listener.address) as slow,
                ipcbus.connect(listener.address, token=listener.token) as fast,
            ):
                fast.on("news", news)
                await slow.handshake(listener.token)
                assert len(ipc_main.get_all_web_contents()) == 2  # both welcomed
                async with anyio.create_task_group() as tg:

                    async def broadcast_all() -> None:
                        for i in range(n):
                            await ipc_main.broadcast("news", i, blob)

                    tg.start_soon(broadcast_all)
                    await early.wait()  # the reading renderer is served meanwhile
                    assert await slow.messages("news", n) == [[i, blob] for i in range(n)]
                await everything.wait()
                assert got == list(range(n))


@pytest.mark.skipif(bool(os.environ.get("IPCBUS_NO_FASTPATH")), reason="a fast-path feature")
async def test_broadcasts_made_back_to_back_leave_in_one_write_per_renderer() -> None:
    """A loop of broadcasts that does not yield: the first is written to every
    renderer at once, the others are queued and leave together when the loop
    turn ends (one more write each), in order; after that, a broadcast is again
    the first of its turn."""
    n, renderers = 50, 3
    got: list[list[int]] = [[] for _ in range(renderers)]
    everything = anyio.Event()

    def tick(who: int, event: ipcbus.IpcRendererEvent, i: int) -> None:
        got[who].append(i)
        if sum(map(len, got)) == renderers * (n + 1):
            everything.set()

    with anyio.fail_after(10):
        async with running_main() as ipc_main, contextlib.AsyncExitStack() as stack:
            for who in range(renderers):
                renderer = await stack.enter_async_context(ipc_main.connect_local())
                renderer.on("tick", functools.partial(tick, who))
            outboxes = [c._endpoint.outbox for c in ipc_main.get_all_web_contents()]  # type: ignore[union-attr]
            before = [outbox.writes for outbox in outboxes]

            def writes() -> list[int]:
                return [outbox.writes - b for outbox, b in zip(outboxes, before, strict=True)]

            await ipc_main.broadcast("tick", 0)
            assert writes() == [1] * renderers  # at once
            for i in range(1, n):
                await ipc_main.broadcast("tick", i)
            assert writes() == [1] * renderers  # queued: nothing yielded yet
            await anyio.lowlevel.checkpoint()  # the turn ends: the queued copies leave
            assert writes() == [2] * renderers
            await ipc_main.broadcast("tick", n)
            assert writes() == [3] * renderers  # the first of its turn: at once
            await everything.wait()
    assert got == [list(range(n + 1))] * renderers


async def test_a_broadcast_reaches_renderers_that_came_after_the_last_one() -> None:
    """Main keeps the list of outboxes a broadcast walks between broadcasts: a
    renderer that connects later is on it, one that left is off it."""
    got: list[tuple[str, int]] = []
    arrived = anyio.Event()

    def news(who: str, event: ipcbus.IpcRendererEvent, i: int) -> None:
        got.append((who, i))
        arrived.set()

    async def next_news() -> None:
        nonlocal arrived
        await arrived.wait()
        arrived = anyio.Event()

    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as first:
            first.on("news", functools.partial(news, "first"))
            await ipc_main.broadcast("news", 1)
            await next_news()
            async with ipc_main.connect_local() as second:
                second.on("news", functools.partial(news, "second"))
                await ipc_main.broadcast("news", 2)
                while len(got) < 3:
                    await next_news()
                gone = ipc_main.from_id(second.id)
                assert gone is not None
            await gone.wait_closed()
            assert ipc_main.get_all_web_contents() == [ipc_main.from_id(first.id)]
            await ipc_main.broadcast("news", 3)
            while len(got) < 4:
                await next_news()
    assert sorted(got) == [("first", 1), ("first", 2), ("first", 3), ("second", 2)]


async def test_broadcasts_and_sends_made_in_one_turn_arrive_in_the_order_made() -> None:
    """Queued broadcasts and ``WebContents.send`` share each renderer's outbox:
    whatever one turn makes, each renderer gets in that order."""
    got: list[tuple[str, int]] = []
    everything = anyio.Event()

    def note(event: ipcbus.IpcRendererEvent, i: int) -> None:
        got.append((event.channel, i))
        if len(got) == 8:
            everything.set()

    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            renderer.on("all", note)
            renderer.on("one", note)
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            for i in range(0, 8, 2):
                await ipc_main.broadcast("all", i)
                await contents.send("one", i + 1)
            await everything.wait()
    assert got == [("one" if i % 2 else "all", i) for i in range(8)]


# ---- close, is_destroyed, wait_closed -----------------------------------------------------


async def test_close_from_main_ends_the_child_cleanly() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_renderer(ipc_main, "worker")
            assert not contents.is_destroyed()
            assert contents.disconnect_details is None
            await contents.close()  # the worker exits when main closes the connection
            assert contents.is_destroyed()
            await contents.wait_closed()  # returns at once now
            assert contents.disconnect_details is not None
            assert contents.disconnect_details.reason == "clean-exit"
            assert contents.disconnect_details.exit_code == 0
            with pytest.raises(ConnectionClosedError):
                await contents.send("x")
            with pytest.raises(ConnectionClosedError):
                await contents.invoke("echo")
            await contents.close()  # idempotent


async def test_close_of_a_local_renderer_is_seen_by_the_renderer() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            assert renderer.is_connected()
            await contents.close()
            await renderer.wait_closed()
            assert not renderer.is_connected()
            with pytest.raises(ConnectionClosedError):
                await renderer.send("x")


async def test_wait_closed_waits_for_the_child_to_exit(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            contents = await spawn_script(ipc_main, tmp_path, QUIT_AT_ONCE)
            await contents.wait_closed()
            assert contents.is_destroyed()
            assert contents.disconnect_details is not None
            assert contents.disconnect_details.exit_code == 0


# ---- SIGKILL mid-invoke -------------------------------------------------------------------


async def test_renderer_killed_mid_invoke(tmp_path: Path) -> None:
    block = Blocker()
    disconnected = anyio.Event()
    details: list[tuple[int, DisconnectDetails]] = []

    def on_disconnect(contents: WebContents, info: DisconnectDetails) -> None:
        details.append((contents.id, info))
        disconnected.set()

    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("block", block)
            ipc_main.handle("add", lambda event, a, b: a + b)
            ipc_main.on_disconnect(on_disconnect)
            other = await spawn_renderer(ipc_main, "worker")
            victim = await spawn_script(
                ipc_main,
                tmp_path,
                """
                import anyio, ipcbus
                async def main():
                    async with ipcbus.connect() as r:
                        await r.invoke("block")
                anyio.run(main)
                """,
            )
            await wait_for(block.started, 10)
            os.kill(victim.process_id, signal.SIGKILL)
            await wait_for(block.cancelled, 10)
            await wait_for(disconnected, 10)
            assert details == [(victim.id, victim.disconnect_details)]
            info = details[0][1]
            assert info.reason == "killed"
            assert info.exit_code == -signal.SIGKILL
            assert victim.is_destroyed()
            assert ipc_main.from_id(victim.id) is None
            # Main keeps serving the other renderer, both ways.
            assert await other.invoke("call-main", "invoke", "add", 2, 3) == {"ok": 5}
            assert await other.invoke("echo", "still") == ["still"]


# ---- leaving ``async with`` ------------------------------------------------------------------


async def test_shutdown_waits_for_handlers_up_to_the_grace_then_cancels(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    both_started = anyio.Event()
    started: set[str] = set()
    never_cancelled = anyio.Event()

    async def slow(event: Any) -> str:
        started.add("slow")
        if len(started) == 2:
            both_started.set()
        await anyio.sleep(0.2)  # real work that ends within the grace period
        return "slow done"

    async def never(event: Any) -> None:
        started.add("never")
        if len(started) == 2:
            both_started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            never_cancelled.set()
            raise

    with anyio.fail_after(30):
        async with running_main(shutdown_grace=1.0) as ipc_main:
            ipc_main.handle("slow", slow)
            ipc_main.handle("never", never)
            contents = await spawn_script(
                ipc_main,
                tmp_path,
                """
                import json, sys, anyio, ipcbus
                async def main():
                    out = {}
                    async with ipcbus.connect() as r:
                        async def call(ch):
                            try:
                                out[ch] = ["ok", await r.invoke(ch)]
                            except ipcbus.IpcError as exc:
                                out[ch] = [type(exc).__name__, str(exc)]
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(call, "slow")
                            tg.start_soon(call, "never")
                    with open(sys.argv[1], "w") as f:
                        json.dump(out, f)
                anyio.run(main)
                """,
                str(out),
            )
            await wait_for(both_started, 10)
        assert never_cancelled.is_set()
        assert contents.is_destroyed()
        assert contents.disconnect_details is not None
        assert contents.disconnect_details.exit_code == 0
        result = json.loads(out.read_text())
        assert result["slow"] == ["ok", "slow done"]
        kind, message = result["never"]
        assert kind in ("RemoteError", "ConnectionClosedError")
        assert "never sent" in message or "closed" in message


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_async_disconnect_hooks_of_renderers_shutdown_closes_get_to_finish(loop: str) -> None:
    """Shutdown closes every renderer, and their ``on_disconnect`` hooks run; async
    ones must not be cancelled at their first ``await`` by main's own exit."""

    async def scenario() -> list[str]:
        seen: list[str] = []

        async def hook(contents: WebContents, details: DisconnectDetails) -> None:
            seen.append(f"started {details.reason}")
            for _ in range(3):
                await anyio.lowlevel.checkpoint()  # where a cancellation would land
            seen.append("finished")

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                async with ipcbus.IpcMain(shutdown_grace=5) as ipc_main:
                    ipc_main.on_disconnect(hook)
                    listener = await ipc_main.listen()
                    connected = anyio.Event()

                    async def renderer() -> None:
                        async with ipcbus.connect(listener.address, token=listener.token):
                            connected.set()
                            await anyio.sleep_forever()  # until main closes it

                    tg.start_soon(renderer)
                    await connected.wait()
                tg.cancel_scope.cancel()
        return seen

    assert ipcbus.run(scenario, loop=loop) == ["started clean-exit", "finished"]


async def test_a_hook_still_running_after_the_grace_is_cancelled_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled = anyio.Event()

    async def stuck(contents: WebContents, details: DisconnectDetails) -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    with anyio.fail_after(20):
        async with ipcbus.IpcMain(shutdown_grace=0.2) as ipc_main:
            ipc_main.on_disconnect(stuck)
            async with ipc_main.connect_local():
                pass
            await anyio.wait_all_tasks_blocked()  # the hook is running
        assert cancelled.is_set()
    (warning,) = [r.getMessage() for r in caplog.records if "lifecycle hook" in r.getMessage()]
    assert "1 lifecycle hook(s) did not finish within shutdown_grace (0.2 s)" in warning


@pytest.mark.parametrize("when", ["before", "after"])
async def test_listen_spawn_connect_local_need_a_running_main(when: str) -> None:
    ipc_main = ipcbus.IpcMain()
    if when == "after":
        async with ipc_main:
            pass
    with anyio.fail_after(5):
        with pytest.raises(RuntimeError, match="async with") as info:
            await ipc_main.listen()
        assert "listen" in str(info.value)
        with pytest.raises(RuntimeError, match="async with"):
            await ipc_main.spawn([sys.executable, "-c", "pass"])
        with pytest.raises(RuntimeError, match="async with"):
            async with ipc_main.connect_local():
                pass


@pytest.mark.parametrize("which", ["ipcbus.connect", "ipc_renderer.connect"])
async def test_connect_misused_without_async_with_says_async_with(which: str) -> None:
    """``await connect(...)`` and ``with connect(...)`` name the fix, not Python's internals."""

    def make() -> object:
        if which == "ipcbus.connect":
            return ipcbus.connect("unix:/nonexistent/main.sock", token="t")
        return ipcbus.IpcRenderer().connect("unix:/nonexistent/main.sock", token="t")

    with anyio.fail_after(5):
        with pytest.raises(TypeError, match=r"cannot be awaited.*'async with ") as awaited:
            await make()  # type: ignore[misc]
        assert which in str(awaited.value)
        with pytest.raises(TypeError, match=r"needs 'async with', not 'with'") as plain:
            with make():  # type: ignore[attr-defined]
                pass
        assert which in str(plain.value)
    assert "_AsyncGeneratorContextManager" not in str(awaited.value) + str(plain.value)


async def test_a_connect_can_be_entered_once_and_still_works() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("x", lambda event: "x")
            listener = await ipc_main.listen()
            connecting = ipcbus.connect(listener.address, token=listener.token)
            async with connecting as renderer:
                assert await renderer.invoke("x") == "x"
                with pytest.raises(RuntimeError, match="already entered"):
                    async with connecting:
                        pass
                assert await renderer.invoke("x") == "x"


async def test_main_can_run_again_after_exit() -> None:
    ipc_main = ipcbus.IpcMain(shutdown_grace=1.0)
    ipc_main.handle("x", lambda event: "x")
    with anyio.fail_after(10):
        for _ in range(2):
            async with ipc_main, ipc_main.connect_local() as renderer:
                assert await renderer.invoke("x") == "x"


async def test_renderer_enters_when_welcome_and_goodbye_arrive_together(tmp_path: Path) -> None:
    """Main may close a renderer right after accepting it (spawn() returned, then
    close()): the Welcome and the Goodbye then arrive in one read. The renderer
    was accepted, so ``connect()`` enters and finds the connection closed;
    it does not report a refused handshake."""
    path = tmp_path / "fake-main.sock"
    out = bytearray()
    encoder = msgspec.msgpack.Encoder()
    append_frame(encoder, Welcome(PROTOCOL_VERSION, 7), out)
    append_frame(encoder, Goodbye(CloseCode.NORMAL, "closed by main"), out)

    async def fake_main(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            await stream.receive()  # the Hello
            await stream.send(bytes(out))

    with anyio.fail_after(5):
        async with (
            await anyio.create_unix_listener(path) as listener,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(listener.serve, fake_main)
            async with ipcbus.connect(f"unix:{path}", token="t") as renderer:
                assert renderer.id == 7
                await renderer.wait_closed()
                assert not renderer.is_connected()
                with pytest.raises(ConnectionClosedError):
                    await renderer.send("x")
            tg.cancel_scope.cancel()


# ---- a child that never connects -----------------------------------------------------

NEVER_CONNECTS = """
import os, signal, sys, time
if sys.argv[2] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
with open(sys.argv[1], "w") as fifo:
    fifo.write(str(os.getpid()))
time.sleep(120)
"""


def _assert_reaped(pid: int) -> None:
    """The process is gone and reaped: not running, not a zombie."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # a zombie would still accept signal 0
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def _pid_from(fifo: Path) -> int:
    return int(await anyio.to_thread.run_sync(fifo.read_text))


@pytest.mark.parametrize("kind", ["polite", "stubborn"])
async def test_spawn_kills_and_reaps_a_child_that_never_connects(tmp_path: Path, kind: str) -> None:
    fifo = tmp_path / "pid.fifo"
    os.mkfifo(fifo)
    pids: list[int] = []
    with anyio.fail_after(20):
        async with running_main(handshake_timeout=0.5) as ipc_main:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: _collect(pids, fifo))
                with pytest.raises(ConnectionClosedError, match="did not connect"):
                    await spawn_script(ipc_main, tmp_path, NEVER_CONNECTS, str(fifo), kind)
            # Checked inside ``async with``: spawn itself ended it, not the shutdown.
            _assert_reaped(pids[0])


async def test_a_cancelled_spawn_kills_and_reaps_its_child(tmp_path: Path) -> None:
    fifo = tmp_path / "pid.fifo"
    os.mkfifo(fifo)
    with anyio.fail_after(20):
        async with running_main(handshake_timeout=60) as ipc_main:
            async with anyio.create_task_group() as tg:
                tg.start_soon(spawn_script, ipc_main, tmp_path, NEVER_CONNECTS, str(fifo), "-")
                pid = await _pid_from(fifo)  # the child runs; spawn waits for its handshake
                tg.cancel_scope.cancel()
            _assert_reaped(pid)
            assert ipc_main.get_all_web_contents() == []


async def _collect(pids: list[int], fifo: Path) -> None:
    pids.append(await _pid_from(fifo))


async def test_a_child_that_outlives_its_connection_is_stopped_when_main_exits(
    tmp_path: Path,
) -> None:
    """Main ended the connection (``contents.close()``); the child kept running, and
    main left it alone after two seconds. It must not outlive ``async with IpcMain``."""
    gone = anyio.Event()
    async with running_main() as ipc_main:
        ipc_main.on_disconnect(lambda contents, details: gone.set())
        contents = await spawn_script(
            ipc_main,
            tmp_path,
            """
            import time, anyio, ipcbus

            async def main():
                async with ipcbus.connect() as ipc:
                    await ipc.wait_closed()

            anyio.run(main)
            time.sleep(120)  # the connection is over; the process is not
            """,
        )
        pid = contents.process_id
        await contents.close()
        await wait_for(gone, 10)  # after main stopped waiting for the child to exit
        os.kill(pid, 0)  # still running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # stopped and reaped
