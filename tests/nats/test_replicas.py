"""Three replicas and a dozen renderers of one app, over a real nats-server.

Each renderer is assigned one replica (a NATS queue group), and everything
it does then happens between the two: the ordering of its sends, send_sync,
invoke and its errors, cancellation, main's pushes and invokes; a broadcast
on any replica reaches every renderer of the app, once.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

import ipcbus

from ..helpers import Blocker, running_main, wait_for

FAST: dict[str, Any] = {"heartbeat_interval": 0.5}
RENDERERS = 12
SENDS = 50


async def test_a_dozen_renderers_spread_over_three_replicas(nats_url: str) -> None:
    received: dict[int, list[int]] = defaultdict(list)
    news: Counter[int] = Counter()
    everyone_heard = anyio.Event()
    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            replicas = []
            for name in ("a", "b", "c"):
                ipc_main = await stack.enter_async_context(running_main(**FAST))
                ipc_main.handle("where", lambda event, name=name: name)
                ipc_main.on("count", lambda event, n: received[event.sender.id].append(n))

                @ipc_main.on("done")
                def done(event: ipcbus.IpcMainEvent) -> None:
                    event.return_value = len(received[event.sender.id])

                await ipc_main.join(nats_url, app="shop")
                replicas.append(ipc_main)

            renderers = []
            for _ in range(RENDERERS):
                renderer = ipcbus.IpcRenderer(**FAST)
                renderer.handle("title", lambda event, r=renderer: f"renderer {r.id}")

                @renderer.on("news")
                def heard(event: ipcbus.IpcRendererEvent, text: str, r: Any = renderer) -> None:
                    assert text == "sale"
                    news[r.id] += 1
                    if len(news) == RENDERERS:
                        everyone_heard.set()

                await stack.enter_async_context(renderer.connect(nats_url, app="shop"))
                renderers.append(renderer)

            # Spread: NATS picks one replica per renderer; each serves only its own.
            served = {
                name: {c.id for c in m.get_all_web_contents()}
                for name, m in zip("abc", replicas, strict=True)
            }
            assert sum(len(ids) for ids in served.values()) == RENDERERS
            assert len([ids for ids in served.values() if ids]) >= 2
            ids = [r.id for r in renderers]
            assert len(set(ids)) == RENDERERS and all(0 < i < 2**53 for i in ids)
            home = {i: name for name, members in served.items() for i in members}
            assert [await r.invoke("where") for r in renderers] == [home[i] for i in ids]

            # Ordering and send_sync: each renderer's sends arrive in order, before its send_sync.
            async def talk(renderer: ipcbus.IpcRenderer) -> None:
                for n in range(SENDS):
                    await renderer.send("count", n)
                assert await renderer.send_sync("done") == SENDS

            async with anyio.create_task_group() as tg:
                for renderer in renderers:
                    tg.start_soon(talk, renderer)
            assert {i: received[i] for i in ids} == {i: list(range(SENDS)) for i in ids}

            # Main to renderer: WebContents.invoke and send reach the right one.
            for ipc_main in replicas:
                for contents in ipc_main.get_all_web_contents():
                    assert await contents.invoke("title") == f"renderer {contents.id}"
                    assert contents.process_id == os.getpid()  # the claim

            # Broadcast on one replica: every renderer of the app, each exactly once.
            await replicas[0].broadcast("news", "sale")
            await wait_for(everyone_heard, 10)
            for renderer in renderers:
                assert await renderer.invoke("where") in "abc"  # a round trip after the news
            assert news == Counter({i: 1 for i in ids})


async def test_invoke_errors_and_cancellation_cross_nats(nats_url: str) -> None:
    slow = Blocker()
    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:

            @ipc_main.handle("boom")
            def boom(event: ipcbus.IpcMainInvokeEvent) -> None:
                raise ValueError("boom")

            ipc_main.handle("slow", slow)

            await ipc_main.join(nats_url, app="errors")
            async with ipcbus.connect(nats_url, app="errors") as renderer:
                with pytest.raises(ipcbus.RemoteError) as info:
                    await renderer.invoke("boom")
                assert str(info.value) == "Error invoking remote method 'boom': ValueError: boom"
                with pytest.raises(ipcbus.NoHandlerError, match="No handler registered for 'x'"):
                    await renderer.invoke("x")
                with pytest.raises(ipcbus.NoHandlerError, match="No listeners registered"):
                    await renderer.send_sync("nobody-listens")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(renderer.invoke, "slow")
                    await wait_for(slow.started)
                    tg.cancel_scope.cancel()
                await wait_for(slow.cancelled)  # the Cancel crossed NATS and reached the handler
                with pytest.raises(ipcbus.IpcTimeoutError):
                    await renderer.invoke("slow", timeout=0.2)


async def test_streams_and_main_pushes_over_nats(nats_url: str) -> None:
    pushed = anyio.Event()
    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:

            @ipc_main.handle("count")
            async def count(event: ipcbus.IpcMainInvokeEvent, n: int) -> Any:
                for i in range(n):
                    yield i

            @ipc_main.on_connect
            async def welcome(contents: ipcbus.WebContents) -> None:
                await contents.send("hello", contents.id)

            await ipc_main.join(nats_url, app="streams")
            renderer = ipcbus.IpcRenderer(**FAST)
            greeted: list[int] = []
            renderer.on("hello", lambda event, i: (greeted.append(i), pushed.set()))
            async with renderer.connect(nats_url, app="streams"):
                # Flow-controlled: far more items than the window, in order.
                assert [i async for i in renderer.stream("count", 500, window=8)] == list(
                    range(500)
                )
                await wait_for(pushed)
                assert greeted == [renderer.id]  # on_connect's push reached the listener
