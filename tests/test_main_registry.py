"""on/once/off/handle... semantics and the per-renderer ``WebContents.ipc`` scope."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import ipcbus
from ipcbus import IpcMainEvent, NoHandlerError

from .helpers import running_main, spawn_renderer, wait_for


class Recorder:
    """Listeners that record their name; ``done`` fires on a sentinel message."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.done = anyio.Event()

    def sync(self, name: str) -> Any:
        def listener(event: IpcMainEvent, *args: Any) -> None:
            self.calls.append((name, args))

        listener.__name__ = name
        return listener

    def async_(self, name: str) -> Any:
        async def listener(event: IpcMainEvent, *args: Any) -> None:
            await anyio.lowlevel.checkpoint()
            self.calls.append((name, args))

        listener.__name__ = name
        return listener

    def sentinel(self, event: IpcMainEvent) -> None:
        self.done.set()

    async def flush(self, renderer: ipcbus.IpcRenderer) -> None:
        """Wait until main has dispatched everything ``renderer`` sent so far.

        Dispatch is in order per connection, and a send_sync reply comes after
        every earlier message's listeners were called.
        """
        await renderer.send_sync("__sentinel__")


def _answer(value: Any) -> Any:
    def listener(event: IpcMainEvent) -> None:
        event.return_value = value

    return listener


def _names(recorder: Recorder) -> list[str]:
    return [name for name, _ in recorder.calls]


def _main_with_sentinel(ipc_main: ipcbus.IpcMain) -> None:
    ipc_main.on("__sentinel__", lambda event: None)


# ---- decorator and call forms ------------------------------------------------


@pytest.mark.parametrize("method", ["on", "once", "handle", "handle_once"])
def test_decorator_and_call_forms_return_fn(method: str) -> None:
    def fn(event: Any) -> None:
        return None

    def fn2(event: Any) -> None:
        return None

    for registry in (ipcbus.IpcMain(), ipcbus.IpcRenderer()):
        register = getattr(registry, method)
        assert register("call", fn) is fn
        assert register("decorated")(fn2) is fn2


async def test_web_contents_ipc_has_the_registry_methods() -> None:
    def fn(event: Any) -> None:
        return None

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            ipc = contents.ipc
            assert ipc.on("a", fn) is fn
            assert ipc.once("a")(fn) is fn
            assert ipc.listener_count("a") == 2
            ipc.off("a", fn)
            ipc.remove_listener("a", fn)
            assert ipc.listener_count("a") == 0
            assert ipc.handle("h")(fn) is fn
            ipc.remove_handler("h")
            assert ipc.handle_once("h", fn) is fn
            ipc.remove_all_listeners()


# ---- on / once / off -----------------------------------------------------------


async def test_listeners_of_one_channel_run_in_registration_order() -> None:
    rec = Recorder()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            _main_with_sentinel(ipc_main)
            for i in range(8):
                ipc_main.on("ch", rec.sync(f"l{i}") if i % 3 else rec.async_(f"l{i}"))
            await renderer.send("ch", "x")
            await rec.flush(renderer)
            assert _names(rec) == [f"l{i}" for i in range(8)]
            assert all(args == ("x",) for _, args in rec.calls)


async def test_once_runs_once_and_is_removed_before_its_call() -> None:
    counts: list[int] = []

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            _main_with_sentinel(ipc_main)

            @ipc_main.once("ch")
            def once(event: IpcMainEvent, n: int) -> None:
                counts.append(ipc_main.listener_count("ch"))
                event.return_value = n

            assert ipc_main.listener_count("ch") == 1
            assert await renderer.send_sync("ch", 1) == 1
            assert counts == [0]  # already removed when it ran
            assert ipc_main.listener_count("ch") == 0
            with pytest.raises(NoHandlerError):
                await renderer.send_sync("ch", 2)
            assert counts == [0]


async def test_once_with_async_listener_and_concurrent_messages() -> None:
    calls: list[int] = []

    async def once(event: IpcMainEvent, n: int) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(n)

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            _main_with_sentinel(ipc_main)
            ipc_main.once("ch", once)
            ipc_main.on("ch", lambda event, n: None)
            for n in range(5):
                await renderer.send("ch", n)
            await renderer.send_sync("__sentinel__")
            assert calls == [0]


async def test_off_removes_one_registration() -> None:
    rec = Recorder()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            _main_with_sentinel(ipc_main)
            fn = rec.sync("fn")
            ipc_main.on("ch", fn)
            ipc_main.on("ch", fn)
            assert ipc_main.listener_count("ch") == 2
            ipc_main.off("ch", fn)
            assert ipc_main.listener_count("ch") == 1
            await renderer.send("ch")
            await rec.flush(renderer)
            assert _names(rec) == ["fn"]
            ipc_main.remove_listener("ch", fn)  # the alias
            assert ipc_main.listener_count("ch") == 0
            ipc_main.off("ch", fn)  # nothing left: no error
            ipc_main.off("never-used", fn)
            await renderer.send("ch")
            await rec.flush(renderer)
            assert _names(rec) == ["fn"]


async def test_off_removes_a_once_registration() -> None:
    rec = Recorder()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            _main_with_sentinel(ipc_main)
            fn = rec.sync("once")
            ipc_main.once("ch", fn)
            ipc_main.off("ch", fn)
            assert ipc_main.listener_count("ch") == 0
            await renderer.send("ch")
            await rec.flush(renderer)
            assert rec.calls == []


async def test_remove_all_listeners_of_one_channel_and_of_all() -> None:
    rec = Recorder()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("a", rec.sync("a1"))
            ipc_main.on("a", rec.sync("a2"))
            ipc_main.on("b", rec.sync("b1"))
            ipc_main.handle("h", lambda event: "handler stays")
            ipc_main.remove_all_listeners("a")
            assert ipc_main.listener_count("a") == 0
            assert ipc_main.listener_count("b") == 1
            ipc_main.remove_all_listeners("never-used")
            _main_with_sentinel(ipc_main)
            await renderer.send("a")
            await renderer.send("b")
            await rec.flush(renderer)
            assert _names(rec) == ["b1"]
            ipc_main.remove_all_listeners()
            assert ipc_main.listener_count("b") == 0
            assert ipc_main.listener_count("__sentinel__") == 0
            assert await renderer.invoke("h") == "handler stays"
            with pytest.raises(NoHandlerError):
                await renderer.send_sync("b")


async def test_listener_removed_during_dispatch_still_runs_for_that_dispatch() -> None:
    rec = Recorder()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            _main_with_sentinel(ipc_main)
            second = rec.sync("second")
            third = rec.async_("third")

            def first(event: IpcMainEvent) -> None:
                rec.calls.append(("first", ()))
                ipc_main.off("ch", second)
                ipc_main.off("ch", third)
                ipc_main.on("ch", rec.sync("added"))  # not for this dispatch either

            ipc_main.on("ch", first)
            ipc_main.on("ch", second)
            ipc_main.on("ch", third)
            await renderer.send("ch")
            await rec.flush(renderer)
            assert _names(rec) == ["first", "second", "third"]
            rec.calls.clear()
            ipc_main.off("ch", first)
            await renderer.send("ch")
            await rec.flush(renderer)
            assert _names(rec) == ["added"]


async def test_remove_all_during_dispatch_still_runs_the_rest() -> None:
    rec = Recorder()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:

            async def first(event: IpcMainEvent) -> None:
                rec.calls.append(("first", ()))
                ipc_main.remove_all_listeners("ch")

            ipc_main.on("ch", first)
            ipc_main.on("ch", rec.sync("second"))
            ipc_main.on("ch", _answer("r"))
            assert await renderer.send_sync("ch") == "r"
            assert _names(rec) == ["first", "second"]
            assert ipc_main.listener_count("ch") == 0


async def test_listener_count() -> None:
    ipc_main = ipcbus.IpcMain()
    assert ipc_main.listener_count("ch") == 0
    fns = [lambda event: None for _ in range(3)]
    for fn in fns:
        ipc_main.on("ch", fn)
    ipc_main.once("ch", fns[0])
    assert ipc_main.listener_count("ch") == 4
    ipc_main.handle("ch", fns[1])  # handlers are not listeners
    assert ipc_main.listener_count("ch") == 4
    assert ipc_main.listener_count("other") == 0


# ---- listeners and handlers are separate ----------------------------------------


async def test_handler_never_sees_send_and_listener_never_sees_invoke() -> None:
    handled: list[str] = []
    listened: list[str] = []
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            _main_with_sentinel(ipc_main)
            ipc_main.handle("h", lambda event: handled.append("h"))
            ipc_main.on("l", lambda event: listened.append("l"))
            await renderer.send("h")
            with pytest.raises(NoHandlerError):
                await renderer.send_sync("h")
            with pytest.raises(NoHandlerError):
                await renderer.invoke("l")
            await renderer.send_sync("__sentinel__")
            assert handled == []
            assert listened == []


# ---- handle_once / remove_handler -------------------------------------------------


async def test_handle_once_serves_one_invoke() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:

            @ipc_main.handle_once("ch")
            async def once(event: Any, n: int) -> int:
                return n + 1

            assert await renderer.invoke("ch", 1) == 2
            with pytest.raises(NoHandlerError, match="No handler registered for 'ch'"):
                await renderer.invoke("ch", 1)
            # After it is used up, a new handler may be registered.
            ipc_main.handle("ch", lambda event, n: n * 10)
            assert await renderer.invoke("ch", 2) == 20


async def test_handle_once_concurrent_invokes_get_one_result() -> None:
    results: list[object] = []
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle_once("ch", lambda event: "only once")

            async def call() -> None:
                try:
                    results.append(await renderer.invoke("ch"))
                except NoHandlerError as exc:
                    results.append(type(exc))

            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(call)
            assert sorted(map(str, results)) == sorted(["only once"] + [str(NoHandlerError)] * 3)


async def test_remove_handler() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.remove_handler("never-registered")  # no error
            ipc_main.handle("ch", lambda event: 1)
            assert await renderer.invoke("ch") == 1
            ipc_main.remove_handler("ch")
            with pytest.raises(NoHandlerError):
                await renderer.invoke("ch")
            ipc_main.remove_handler("ch")  # twice: still no error
            ipc_main.handle("ch", lambda event: 2)  # may register again
            assert await renderer.invoke("ch") == 2


# ---- renderer-side registry (main -> renderer) -----------------------------------


async def test_renderer_listeners_once_off_and_handle_once() -> None:
    got: list[tuple[str, Any]] = []
    done = anyio.Event()

    def end(event: ipcbus.IpcRendererEvent) -> None:
        done.set()

    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None

            def a(event: ipcbus.IpcRendererEvent, n: int) -> None:
                got.append(("a", n))
                assert event.sender is renderer
                assert event.sender_id == 0
                assert event.channel == "ch"

            async def b(event: ipcbus.IpcRendererEvent, n: int) -> None:
                got.append(("b", n))

            renderer.on("ch", a)
            renderer.once("ch", b)
            renderer.on("end", end)
            renderer.handle_once("h", lambda event: "once")
            await contents.send("ch", 1)
            await contents.send("ch", 2)
            await contents.send("end")
            await wait_for(done)
            assert got == [("a", 1), ("b", 1), ("a", 2)]
            renderer.off("ch", a)
            assert renderer.listener_count("ch") == 0
            done = anyio.Event()
            await contents.send("ch", 3)  # nobody listens: dropped
            await contents.send("end")
            await wait_for(done)
            assert got == [("a", 1), ("b", 1), ("a", 2)]
            assert await contents.invoke("h") == "once"
            with pytest.raises(NoHandlerError):
                await contents.invoke("h")
            renderer.remove_all_listeners()
            assert renderer.listener_count("end") == 0


# ---- scoped WebContents.ipc ---------------------------------------------------------


async def test_scoped_listeners_run_before_main_listeners() -> None:
    rec = Recorder()
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            _main_with_sentinel(ipc_main)
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            # Main's listeners are registered first, scoped ones still run first.
            ipc_main.on("ch", rec.sync("main-1"))
            ipc_main.on("ch", rec.async_("main-2"))
            contents.ipc.on("ch", rec.async_("scoped-1"))
            contents.ipc.on("ch", rec.sync("scoped-2"))
            await renderer.send("ch", 5)
            await rec.flush(renderer)
            assert _names(rec) == ["scoped-1", "scoped-2", "main-1", "main-2"]
            rec.calls.clear()
            contents.ipc.remove_all_listeners("ch")
            await renderer.send("ch", 6)
            await rec.flush(renderer)
            assert _names(rec) == ["main-1", "main-2"]


async def test_scoped_listener_alone_answers_send_sync() -> None:
    with anyio.fail_after(5):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            contents = ipc_main.from_id(renderer.id)
            assert contents is not None
            contents.ipc.on("ch", _answer("scoped"))
            assert await renderer.send_sync("ch") == "scoped"
            async with ipc_main.connect_local() as other:
                with pytest.raises(NoHandlerError):
                    await other.send_sync("ch")


async def test_scoped_handler_overrides_main_handler_for_that_renderer_only() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("who", lambda event: ["main", event.sender.id])
            async with ipc_main.connect_local() as renderer:
                contents = ipc_main.from_id(renderer.id)
                assert contents is not None
                contents.ipc.handle("who", lambda event: ["scoped", event.sender.id])
                child = await spawn_renderer(ipc_main, "worker")
                assert await renderer.invoke("who") == ["scoped", contents.id]
                assert await child.invoke("call-main", "invoke", "who") == {
                    "ok": ["main", child.id]
                }
                async with ipc_main.connect_local() as other:
                    assert await other.invoke("who") == ["main", other.id]
                contents.ipc.remove_handler("who")
                assert await renderer.invoke("who") == ["main", contents.id]


async def test_scoped_handler_of_spawned_child() -> None:
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            ipc_main.handle("who", lambda event: "main")
            first = await spawn_renderer(ipc_main, "worker")
            second = await spawn_renderer(ipc_main, "worker")
            first.ipc.handle("who", lambda event: f"scoped to {event.sender.id}")
            assert await first.invoke("call-main", "invoke", "who") == {
                "ok": f"scoped to {first.id}"
            }
            assert await second.invoke("call-main", "invoke", "who") == {"ok": "main"}
            first.ipc.handle("only-first", lambda event: 1)
            assert (await second.invoke("call-main", "invoke", "only-first"))[
                "error"
            ] == "NoHandlerError"
