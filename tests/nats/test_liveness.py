"""Replicas and renderers that leave or die, with calls in flight.

Every caller is answered or fails with ``ConnectionClosedError`` (or the
``RemoteError`` of a handler cancelled by a shutdown), none hangs and none is
answered twice; a renderer that connects again gets a live replica.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

import ipcbus
import nats

from ..helpers import child_env, running_main, wait_for

HERE = Path(__file__).parent
FAST: dict[str, Any] = {"heartbeat_interval": 0.5}
CALLERS = 6


@asynccontextmanager
async def child(*argv: str) -> AsyncIterator[tuple[anyio.abc.Process, str]]:
    """A child process and the first line it prints; killed and reaped at the end."""
    process = await anyio.open_process(
        [sys.executable, *argv], env=child_env(), stderr=None, stdin=None
    )
    try:
        assert process.stdout is not None
        line = b""
        with anyio.fail_after(15):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive(1)
                line += chunk
        yield process, line.decode().strip()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await process.aclose()


async def call_all(
    renderers: list[ipcbus.IpcRenderer], channel: str, outcomes: list[tuple[int, Any]]
) -> None:
    async def one(i: int, renderer: ipcbus.IpcRenderer) -> None:
        try:
            outcomes.append((i, await renderer.invoke(channel)))
        except (ipcbus.ConnectionClosedError, ipcbus.RemoteError) as exc:
            outcomes.append((i, exc))

    async with anyio.create_task_group() as tg:
        for i, renderer in enumerate(renderers):
            tg.start_soon(one, i, renderer)


async def test_a_replica_that_leaves_answers_or_fails_every_call(nats_url: str) -> None:
    started = 0
    all_started, stop = anyio.Event(), anyio.Event()
    outcomes: list[tuple[int, Any]] = []

    async def replica(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with running_main(shutdown_grace=0.2, **FAST) as ipc_main:

            @ipc_main.handle("block")
            async def block(event: ipcbus.IpcMainInvokeEvent) -> None:
                nonlocal started
                started += 1
                if started == CALLERS:
                    all_started.set()
                await anyio.sleep_forever()

            await ipc_main.join(nats_url, app="leaving")
            task_status.started()
            await stop.wait()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg, AsyncExitStack() as stack:
            await tg.start(replica)
            renderers = [
                await stack.enter_async_context(ipcbus.connect(nats_url, app="leaving"))
                for _ in range(CALLERS)
            ]
            async with anyio.create_task_group() as calls:
                calls.start_soon(call_all, renderers, "block", outcomes)
                await wait_for(all_started)
                stop.set()  # the replica leaves the app with every call in flight
            for renderer in renderers:
                await renderer.wait_closed()  # its Goodbye came at once
            # Rejoining: no replica now, then a live one.
            with pytest.raises(ipcbus.ConnectionClosedError, match="'leaving'"):
                async with ipcbus.connect(nats_url, app="leaving", timeout=2):
                    pass
            async with running_main(**FAST) as live:
                live.handle("block", lambda event: "served")
                await live.join(nats_url, app="leaving")
                async with ipcbus.connect(nats_url, app="leaving") as again:
                    assert await again.invoke("block") == "served"
    assert sorted(i for i, _ in outcomes) == list(range(CALLERS))  # each once
    for _, outcome in outcomes:
        assert isinstance(outcome, ipcbus.ConnectionClosedError | ipcbus.RemoteError)


async def test_a_killed_replica_fails_its_callers_by_heartbeat(nats_url: str) -> None:
    outcomes: list[tuple[int, Any]] = []
    blocked = 0
    all_blocked = anyio.Event()

    def on_blocked(event: ipcbus.IpcRendererEvent) -> None:
        nonlocal blocked
        blocked += 1
        if blocked == CALLERS:
            all_blocked.set()

    with anyio.fail_after(60):
        argv = (str(HERE / "replica_child.py"), nats_url, "crash", "child")
        async with child(*argv) as (process, line), AsyncExitStack() as stack:
            assert line == "joined"
            renderers = []
            for _ in range(CALLERS):
                renderer = ipcbus.IpcRenderer(**FAST)
                renderer.on("blocked", on_blocked)
                await stack.enter_async_context(renderer.connect(nats_url, app="crash"))
                assert await renderer.invoke("where") == "child"
                renderers.append(renderer)
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_all, renderers, "block", outcomes)
                await wait_for(all_blocked, 10)  # every call is in the child's handlers
                process.send_signal(signal.SIGKILL)
            # Every caller failed: the heartbeats found the silence (NATS says nothing).
            assert sorted(i for i, _ in outcomes) == list(range(CALLERS))
            for _, outcome in outcomes:
                assert isinstance(outcome, ipcbus.ConnectionClosedError), outcome
                assert "heartbeat" in str(outcome)
            # A renderer that connects again gets a live replica.
            async with running_main(**FAST) as live:
                live.handle("where", lambda event: "live")
                await live.join(nats_url, app="crash")
                async with ipcbus.connect(nats_url, app="crash") as again:
                    assert await again.invoke("where") == "live"


async def test_a_killed_renderer_is_reported_to_its_replica(nats_url: str) -> None:
    gone = anyio.Event()
    details: list[ipcbus.DisconnectDetails] = []
    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:
            ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
            await ipc_main.join(nats_url, app="pages")
            argv = (str(HERE / "renderer_child.py"), nats_url, "pages")
            async with child(*argv) as (process, line):
                (contents,) = ipc_main.get_all_web_contents()
                assert contents.id == int(line)
                process.send_signal(signal.SIGKILL)
                await wait_for(gone, 10)
    assert details[0].reason == "connection-lost"
    assert "heartbeat" in details[0].message


async def test_lost_messages_end_the_connection(nats_url: str) -> None:
    gone = anyio.Event()
    details: list[ipcbus.DisconnectDetails] = []
    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
            replica = await ipc_main.join(nats_url, app="gaps")
            # No heartbeat to speak of: only the replica's Goodbye can end it in time.
            renderer = ipcbus.IpcRenderer(heartbeat_interval=60)
            async with renderer.connect(nats_url, app="gaps"):
                assert await renderer.invoke("ping") == "pong"
                # A message numbered past the next one: the ones between were lost.
                intruder = await nats.connect(nats_url)
                frames = renderer._endpoint.stream  # type: ignore[union-attr]
                subject = frames.send_subject  # type: ignore[attr-defined]
                assert subject.startswith(f"ipcbus.gaps.replica.{replica.replica_id}.")
                await intruder.publish(subject, b"\x90", headers={"Ipcbus-Seq": "99"})
                await intruder.close()
                await wait_for(gone, 10)
                with anyio.fail_after(10):
                    await renderer.wait_closed()  # the replica said Goodbye at once
                with pytest.raises(ipcbus.ConnectionClosedError, match="lost messages"):
                    await renderer.invoke("ping")
    assert details[0].reason == "connection-lost"
    assert re.search(
        r"messages were lost: expected message \d+, got message 99", details[0].message
    )
