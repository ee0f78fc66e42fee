"""Dispatch edge cases: callables that are not ``async def`` but return coroutines."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

import ipcbus

from .helpers import running_main


async def test_plain_callable_returning_a_coroutine_can_still_answer_send_sync() -> None:
    async def answer(event: ipcbus.IpcMainEvent, arg: str) -> None:
        await anyio.lowlevel.checkpoint()
        event.return_value = arg * 2

    def looks_sync(event: ipcbus.IpcMainEvent, arg: str) -> Any:
        return answer(event, arg)  # a coroutine, from a plain function

    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.on("double", looks_sync)
            async with ipc_main.connect_local() as renderer:
                assert await renderer.send_sync("double", "ab") == "abab"


async def test_plain_callable_returning_a_coroutine_as_a_handler() -> None:
    async def add(event: ipcbus.IpcMainInvokeEvent, a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return a + b

    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("add", lambda event, a, b: add(event, a, b))
            async with ipc_main.connect_local() as renderer:
                assert await renderer.invoke("add", 2, 3) == 5


async def test_broadcast_encodes_once_reaches_everyone_and_checks_values_first() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            async with ipc_main.connect_local() as a, ipc_main.connect_local() as b:
                got: list[tuple[int, str]] = []
                both = anyio.Event()

                def on_news(event: ipcbus.IpcRendererEvent, text: str) -> None:
                    got.append((event.sender.id, text))
                    if len(got) == 2:
                        both.set()

                a.on("news", on_news)
                b.on("news", on_news)
                await ipc_main.broadcast("news", "hello")
                await both.wait()
                assert sorted(got) == sorted([(a.id, "hello"), (b.id, "hello")])
                try:
                    await ipc_main.broadcast("news", object())
                except ipcbus.SerializationError as exc:
                    assert "Cannot broadcast on channel 'news'" in str(exc)
                else:
                    raise AssertionError("broadcast of an unencodable value did not raise")


async def test_listener_changes_between_messages_take_effect_at_once() -> None:
    """Lookups are cached per channel; any change to any registry must show at once."""
    calls: list[str] = []
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            first = ipc_main.on("ch", lambda event, n: calls.append(f"first {n}"))
            ipc_main.on("sync", lambda event: setattr(event, "return_value", None))
            async with ipc_main.connect_local() as renderer:
                contents = ipc_main.get_all_web_contents()[0]
                await renderer.send("ch", 1)
                await renderer.send("ch", 2)
                await renderer.send_sync("sync")  # in order: the sends have been dispatched
                ipc_main.once("ch", lambda event, n: calls.append(f"once {n}"))
                await renderer.send("ch", 3)
                await renderer.send("ch", 4)
                await renderer.send_sync("sync")
                contents.ipc.on("ch", lambda event, n: calls.append(f"scoped {n}"))
                await renderer.send("ch", 5)
                await renderer.send_sync("sync")
                ipc_main.off("ch", first)
                contents.ipc.remove_all_listeners("ch")
                await renderer.send("ch", 6)
                await renderer.send_sync("sync")
                # Made-up channels are not remembered: a peer cannot grow the cache.
                for i in range(100):
                    await renderer.send(f"nobody-{i}", i)
                await renderer.send_sync("sync")
                assert set(contents._endpoint.dispatcher._listeners_cache) <= {"ch", "sync"}
    assert calls == [
        "first 1",
        "first 2",
        "first 3",
        "once 3",
        "first 4",
        "scoped 5",
        "first 5",
    ]


async def test_handler_changes_between_invokes_take_effect_at_once() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("who", lambda event: "main")
            async with ipc_main.connect_local() as renderer:
                contents = ipc_main.get_all_web_contents()[0]
                assert await renderer.invoke("who") == "main"
                assert await renderer.invoke("who") == "main"
                contents.ipc.handle_once("who", lambda event: "scoped once")
                assert await renderer.invoke("who") == "scoped once"
                assert await renderer.invoke("who") == "main"
                ipc_main.remove_handler("who")
                with pytest.raises(ipcbus.NoHandlerError):
                    await renderer.invoke("who")
                ipc_main.handle("who", lambda event: "main again")
                assert await renderer.invoke("who") == "main again"


# A burst of sends from one renderer reaches main in few reads, and main calls
# the sync listeners of a read's leading messages in one loop
# (Dispatcher._message_run). These check that the loop keeps every rule.

BURST = 200


async def _burst(ipc_main: ipcbus.IpcMain, sends: list[tuple[str, Any]]) -> None:
    """Send ``sends`` back to back over a real socket, then wait until main has them all."""
    ipc_main.on("flushed", lambda event: setattr(event, "return_value", True))
    listener = await ipc_main.listen()
    async with ipcbus.connect(listener.address, token=listener.token) as renderer:
        for channel, value in sends:
            await renderer.send(channel, value)
        await renderer.send_sync("flushed")  # in order: every send was dispatched before


async def test_a_burst_stops_calling_a_listener_removed_by_another_at_once() -> None:
    seen: list[int] = []
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            # Unannotated: the listeners share one decoding, the fast way.
            def remover(event, n):  # type: ignore[no-untyped-def]
                if n == 10:
                    ipc_main.off("ch", counted)

            def counted(event, n):  # type: ignore[no-untyped-def]
                seen.append(n)

            ipc_main.on("ch", remover)
            ipc_main.on("ch", counted)
            await _burst(ipc_main, [("ch", i) for i in range(BURST)])
    # Listeners called for one message are the ones registered when it arrived
    # (message 10 still reaches `counted`).
    assert seen == list(range(11))


async def test_a_coroutine_returned_mid_burst_starts_before_the_next_message() -> None:
    calls: list[Any] = []
    with anyio.fail_after(10):
        async with running_main() as ipc_main:

            async def later(n: int) -> None:
                calls.append(f"coroutine {n}")  # its first step: before any await

            def listener(event: Any, n: int) -> Any:
                calls.append(n)
                return later(n) if n % 50 == 7 else None

            ipc_main.on("ch", listener)
            await _burst(ipc_main, [("ch", i) for i in range(BURST)])
    expected: list[Any] = []
    for n in range(BURST):
        expected += [n, f"coroutine {n}"] if n % 50 == 7 else [n]
    assert calls == expected


async def test_a_burst_with_bad_arguments_and_failing_listeners_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got: list[int] = []
    with anyio.fail_after(10):
        async with running_main() as ipc_main:

            def typed(event: Any, x: int) -> None:
                if x % 7 == 3:
                    raise RuntimeError(f"listener failed on {x}")
                got.append(x)

            ipc_main.on("ch", typed)
            sends: list[tuple[str, Any]] = []
            for i in range(BURST):
                sends.append(("ch", i))
                if i % 40 == 5:
                    sends.append(("ch", f"not an int {i}"))
                if i % 60 == 9:
                    sends.append(("other", i))  # nobody listens: dropped
            await _burst(ipc_main, sends)
    assert got == [x for x in range(BURST) if x % 7 != 3]
    failed = [r for r in caplog.records if "raised" in r.getMessage()]
    assert len(failed) == len([x for x in range(BURST) if x % 7 == 3])
    invalid = [r for r in caplog.records if "do not fit its annotations" in r.getMessage()]
    assert len(invalid) == len([i for i in range(BURST) if i % 40 == 5])


async def test_an_async_listener_in_a_burst_is_called_in_order() -> None:
    calls: list[str] = []
    with anyio.fail_after(10):
        async with running_main() as ipc_main:

            async def slow(event: Any, n: int) -> None:
                calls.append(f"async {n}")
                await anyio.lowlevel.checkpoint()

            ipc_main.on("sync-ch", lambda event, n: calls.append(f"sync {n}"))
            ipc_main.on("async-ch", slow)
            sends = [("async-ch" if i % 9 == 4 else "sync-ch", i) for i in range(BURST)]
            await _burst(ipc_main, sends)
    assert calls == [f"{'async' if i % 9 == 4 else 'sync'} {i}" for i in range(BURST)]


async def test_one_argument_listeners_given_other_counts_in_a_burst_say_so_and_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener of one argument is called without ``*args`` on the fast way;
    a message with another count must still reach it the general way (and fail
    there as a call with the wrong count does), and a listener with a default
    is no listener of one argument."""
    got: list[Any] = []
    defaulted: list[Any] = []
    with anyio.fail_after(10):
        async with running_main() as ipc_main:

            def one(event, x):  # type: ignore[no-untyped-def]
                got.append(x)

            def with_default(event, x, y="default"):  # type: ignore[no-untyped-def]
                defaulted.append((x, y))

            ipc_main.on("one", one)
            ipc_main.on("default", with_default)
            ipc_main.on("flushed", lambda event: setattr(event, "return_value", True))
            listener = await ipc_main.listen()
            async with ipcbus.connect(listener.address, token=listener.token) as renderer:
                for i in range(BURST):
                    if i % 30 == 4:
                        await renderer.send("one", i, "one too many")
                    elif i % 45 == 8:
                        await renderer.send("one")
                    else:
                        await renderer.send("one", i)
                    await renderer.send("default", *([i] if i % 2 else [i, "given"]))
                await renderer.send_sync("flushed")
    wrong = [i for i in range(BURST) if i % 30 == 4 or (i % 45 == 8 and i % 30 != 4)]
    assert got == [i for i in range(BURST) if i not in wrong]
    assert defaulted == [(i, "default" if i % 2 else "given") for i in range(BURST)]
    failed = [r for r in caplog.records if "raised" in r.getMessage() and "'one'" in r.getMessage()]
    assert len(failed) == len(wrong)


async def test_one_argument_handlers_take_one_and_refuse_other_counts() -> None:
    """An invoke handler of one argument is called without ``*args``; other
    counts reach it the general way and fail as the call would."""
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("untyped", lambda event, x: ["got", x])

            def typed(event: Any, x: int) -> list[Any]:
                return ["typed", x]

            ipc_main.handle("typed", typed)
            async with ipc_main.connect_local() as renderer:
                assert await renderer.invoke("untyped", [1, 2]) == ["got", [1, 2]]
                assert await renderer.invoke("typed", 7) == ["typed", 7]
                with pytest.raises(ipcbus.RemoteError, match="positional argument"):
                    await renderer.invoke("untyped", 1, 2)
                with pytest.raises(ipcbus.RemoteError, match="positional argument"):
                    await renderer.invoke("untyped")
                with pytest.raises(ipcbus.ValidationError):
                    await renderer.invoke("typed", 1, 2)
                assert await renderer.invoke("untyped", None) == ["got", None]
