"""What a NATS deployment refuses: wrong credentials, an app nobody serves, large frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import ipcbus
import nats
from ipcbus._nats import ConnectRequest, connect_subject

from ..helpers import running_main
from .conftest import NatsServer

FAST: dict[str, Any] = {"heartbeat_interval": 0.5}


async def test_nats_credentials_are_checked_by_the_server(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, "authorization { user: alice, password: s3cret }\n")
    try:
        with anyio.fail_after(30):
            async with running_main(**FAST) as ipc_main:
                ipc_main.handle("add", lambda event, a, b: a + b)
                with pytest.raises(ipcbus.ConnectionClosedError, match="refused the credentials"):
                    await ipc_main.join(server.url, app="shop", user="alice", password="wrong")
                await ipc_main.join(server.url, app="shop", user="alice", password="s3cret")
                with pytest.raises(ipcbus.ConnectionClosedError, match="refused the credentials"):
                    async with ipcbus.connect(server.url, app="shop"):
                        pass
                async with ipcbus.connect(
                    server.url, app="shop", user="alice", password="s3cret"
                ) as renderer:
                    assert await renderer.invoke("add", 2, 3) == 5
    finally:
        server.stop()


async def test_an_app_token_is_checked_too(nats_url: str) -> None:
    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            await ipc_main.join(nats_url, app="shop", token="app-secret")
            with pytest.raises(ipcbus.AuthenticationError):
                async with ipcbus.connect(nats_url, app="shop", token="guess"):
                    pass
            async with ipcbus.connect(nats_url, app="shop", token="app-secret") as renderer:
                assert await renderer.invoke("ping") == "pong"


async def test_connecting_to_an_app_nobody_serves_names_the_app(nats_url: str) -> None:
    with anyio.fail_after(10):
        with pytest.raises(ipcbus.ConnectionClosedError, match="no replica serves app 'ghost'"):
            async with ipcbus.connect(nats_url, app="ghost"):
                pass
        with pytest.raises(ValueError, match="app must be"):
            async with ipcbus.connect(nats_url, app="a.b"):
                pass
        with pytest.raises(TypeError, match="NATS options need app"):
            async with ipcbus.connect("tcp://127.0.0.1:1", user="alice"):
                pass


async def test_a_frame_over_max_payload_fails_at_its_caller(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, "max_payload: 8192\n")
    try:
        with anyio.fail_after(30):
            async with running_main(**FAST) as ipc_main:
                ipc_main.handle("echo", lambda event, value: value)
                ipc_main.handle("big", lambda event: b"x" * 20_000)
                await ipc_main.join(server.url, app="shop")
                async with ipcbus.connect(server.url, app="shop") as renderer:
                    assert await renderer.invoke("echo", b"x" * 4000) == b"x" * 4000
                    for call in (renderer.invoke, renderer.send):
                        with pytest.raises(ipcbus.FrameTooLargeError, match="max_payload is 8192"):
                            await call("echo", b"x" * 10_000)
                    with pytest.raises(ipcbus.RemoteError, match="max_payload is 8192"):
                        await renderer.invoke("big")
                    (contents,) = ipc_main.get_all_web_contents()
                    with pytest.raises(ipcbus.FrameTooLargeError, match="max_payload is 8192"):
                        await contents.send("push", b"x" * 10_000)
                    with pytest.raises(ipcbus.FrameTooLargeError, match=r"max_payload \(8192\)"):
                        await ipc_main.broadcast("news", b"x" * 10_000)
                    assert await renderer.invoke("echo", "still fine") == "still fine"
    finally:
        server.stop()


def test_the_nats_transport_says_it_needs_asyncio(nats_url: str) -> None:
    async def main() -> None:
        async with ipcbus.IpcMain() as ipc_main:
            with pytest.raises(RuntimeError, match="asyncio only"):
                await ipc_main.join(nats_url, app="shop")
        with pytest.raises(RuntimeError, match="asyncio only"):
            async with ipcbus.connect(nats_url, app="shop"):
                pass

    anyio.run(main, backend="trio")


async def test_a_flood_of_connect_requests_costs_a_replica_a_bounded_number_of_links(
    nats_url: str,
) -> None:
    """Anyone who may publish on the app's connect subject can ask for connections
    faster than it completes them: each counts against max_pending_handshakes until
    its Hello (one more drops the oldest), so main never holds more than that many,
    and renderers with the token still get in."""
    requests = 2000
    with anyio.fail_after(60):
        async with running_main(**FAST) as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            await ipc_main.join(nats_url, app="flood")
            intruder = await nats.connect(nats_url)
            answered = anyio.Event()
            answers = 0
            most = pending = 0

            async def on_answer(msg: Any) -> None:
                nonlocal answers, most, pending
                answers += 1
                most = max(most, len(ipc_main._links))  # those being dropped too
                pending = max(pending, len(ipc_main._pending))
                if answers == requests:
                    answered.set()

            inbox = intruder.new_inbox()
            await intruder.subscribe(f"{inbox}.*", cb=on_answer)
            for i in range(requests):
                await intruder.publish(
                    connect_subject("flood"),
                    msgspec.msgpack.encode(ConnectRequest(f"{inbox}.frames{i}")),
                    reply=f"{inbox}.{i}",
                )
            await intruder.flush()
            await answered.wait()
            await intruder.close()
            assert pending <= ipc_main.max_pending_handshakes
            assert most <= 2 * ipc_main.max_pending_handshakes
            async with ipcbus.connect(nats_url, app="flood") as renderer:
                assert await renderer.invoke("ping") == "pong"
