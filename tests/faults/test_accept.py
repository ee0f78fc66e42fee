"""Hostile connections against main's door (issue 10, section 2).

* Running out of file descriptors (idle sockets past ``RLIMIT_NOFILE``) must not
  end ``IpcMain``: accept backs off, logs once, refuses what waits, and accepts
  again once descriptors are free. main runs in a child process with a low
  limit (``tests/renderers/fd_main.py``), on each accept path.
* Connections that never authenticate have their own budget
  (``max_pending_handshakes``): they cannot keep renderers with the token, or
  ``spawn``, out.
* A refused connection uses up no renderer id.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.abc
import pytest

import ipcbus
from ipcbus import _lograte
from ipcbus._framing import FrameDecoder
from ipcbus._lograte import WarningRate
from ipcbus._wire import PROTOCOL_VERSION, Body, CloseCode, Goodbye, Hello

from ..helpers import RENDERERS, child_env, spawn_renderer
from ._raw import _BODY_DECODER, RawPeer, bench, frames, raw_frame, wait_until

NOFILE = 128
HOGS = NOFILE + 40  # more idle connections than main has descriptors

PATHS = [
    pytest.param("asyncio", {}, "unix", id="asyncio-fastpath"),
    pytest.param("asyncio", {"IPCBUS_NO_FASTPATH": "1"}, "unix", id="asyncio-anyio"),
    pytest.param("asyncio", {}, "tcp://127.0.0.1:0", id="asyncio-tcp"),
    pytest.param("trio", {}, "unix", id="trio"),
]


def connect_raw(address: str) -> socket.socket:
    """A plain socket connected to ``address`` that will never say a word."""
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address.removeprefix("unix:"))
    else:
        host, _, port = address.removeprefix("tcp://").rpartition(":")
        sock = socket.create_connection((host, int(port)))
    return sock


async def refusal(sock: socket.socket) -> Body:
    """The frame main sent on ``sock`` before closing it."""
    decoder = FrameDecoder(1 << 16)
    sock.setblocking(False)
    while (body := decoder.next_body()) is None:
        await anyio.wait_readable(sock)
        data = sock.recv(65536)
        assert data, "closed without a Goodbye"
        decoder.feed(data)
    return _BODY_DECODER.decode(body)


@pytest.mark.parametrize(("backend", "env", "where"), PATHS)
async def test_out_of_descriptors_main_refuses_and_keeps_serving(
    tmp_path: Path, backend: str, env: dict[str, str], where: str
) -> None:
    log = tmp_path / "main.log"
    with anyio.fail_after(60), log.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, str(RENDERERS / "fd_main.py"), str(NOFILE), backend, where],
            env=child_env(**env),
            stderr=stderr,
        )
        hogs: list[socket.socket] = []
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive()
            address, token = line.decode().split()
            async with ipcbus.connect(address, token=token) as healthy:
                assert await healthy.invoke("echo", 0) == 0
                for _ in range(HOGS):
                    hogs.append(connect_raw(address))
                # main took what it could; the last ones waited and were refused.
                goodbye = await refusal(hogs[-1])
                assert isinstance(goodbye, Goodbye), goodbye
                assert goodbye.code is CloseCode.TOO_MANY_CONNECTIONS
                assert "out of file descriptors" in goodbye.reason
                for n in range(20):  # the renderer already connected is served throughout
                    assert await healthy.invoke("echo", n) == n
                for sock in hogs:
                    sock.close()
                hogs.clear()
                # No event says main has closed its ends: ask it.
                while await healthy.invoke("fds") > NOFILE - 20:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                async with ipcbus.connect(address, token=token) as late:
                    assert await late.invoke("echo", "again") == "again"
                assert await healthy.invoke("echo", 1) == 1
        finally:
            for sock in hogs:
                sock.close()
            if process.stdin is not None:
                await process.stdin.aclose()
            await process.wait()
            await process.aclose()
    assert process.returncode == 0
    lines = log.read_text().splitlines()
    assert len([line for line in lines if "cannot accept connections" in line]) == 1, lines
    assert len([line for line in lines if "accepting connections" in line]) == 1, lines


async def test_idle_unauthenticated_sockets_cannot_lock_renderers_out() -> None:
    """100 sockets that never say a word, against max_connections=16 (and the
    default budget of 64 pending handshakes): renderers with the token and
    spawned ones still get in; the sockets that waited longest are dropped."""
    with anyio.fail_after(30):
        async with bench(max_connections=16) as setup, AsyncExitStack() as stack:
            address, token = setup.listener.address, setup.listener.token
            idle = [await stack.enter_async_context(RawPeer.connect(address)) for _ in range(100)]
            async with ipcbus.connect(address, token=token) as renderer:
                assert await renderer.invoke("add", 1, 2) == 3
                contents = await spawn_renderer(setup.ipc_main, "echo")
                assert await contents.invoke("echo", "in") == ["in"]
                await contents.close()
            dropped = await idle[0].goodbye()
            assert dropped.code is CloseCode.TOO_MANY_CONNECTIONS
            assert "waiting for their handshake" in dropped.reason
            assert "at most 64" in dropped.reason
            await setup.check_healthy()


async def test_the_pending_budget_is_an_option() -> None:
    with anyio.fail_after(20):
        async with bench(max_pending_handshakes=2) as setup:
            address, token = setup.listener.address, setup.listener.token
            async with RawPeer.connect(address) as first, RawPeer.connect(address) as second:
                async with RawPeer.connect(address) as third:
                    goodbye = await first.goodbye()  # the third pushed the first out
                    assert "at most 2" in goodbye.reason
                    welcome = await third.handshake(token)
                    assert welcome.renderer_id > 0
                    await second.send(frames())  # still waiting, still connected
    with pytest.raises(ValueError, match="max_pending_handshakes"):
        ipcbus.IpcMain(max_pending_handshakes=0)


async def test_wrong_tokens_use_up_no_renderer_id() -> None:
    """docs/protocol.md: the id is handed out after the token is accepted."""
    with anyio.fail_after(20):
        async with bench() as setup:
            address, token = setup.listener.address, setup.listener.token
            async with ipcbus.connect(address, token=token) as a:
                pass
            for _ in range(3):
                with pytest.raises(ipcbus.AuthenticationError):
                    async with ipcbus.connect(address, token="wrong"):
                        pass
            async with ipcbus.connect(address, token=token) as b:
                assert b.id == a.id + 1


async def test_refused_connections_use_up_no_renderer_id() -> None:
    """Nor do connections refused for want of room, at once or at their Hello."""
    with anyio.fail_after(30):
        async with bench(max_connections=3) as setup:  # the healthy renderer is one
            address, token = setup.listener.address, setup.listener.token
            async with (
                RawPeer.connect(address) as early,
                ipcbus.connect(address, token=token) as a,
            ):
                for _ in range(2):  # wrong tokens
                    async with RawPeer.connect(address) as peer:
                        await peer.send(frames(Hello(PROTOCOL_VERSION, "wrong", 0)))
                        goodbye = await peer.goodbye()
                        assert goodbye.code is CloseCode.AUTHENTICATION_FAILED
                async with RawPeer.connect(address):
                    pass  # gone without a word
                async with ipcbus.connect(address, token=token) as b:
                    assert b.id == a.id + 1
                    # Full now. A connection accepted before is refused at its Hello...
                    await early.send(frames(Hello(PROTOCOL_VERSION, token, 0)))
                    goodbye = await early.goodbye()
                    assert goodbye.code is CloseCode.TOO_MANY_CONNECTIONS, goodbye
                    # ...a new one at once, and a spawned child with a clear error.
                    with pytest.raises(ipcbus.ConnectionClosedError, match="too many connections"):
                        async with ipcbus.connect(address, token=token):
                            pass
                    with pytest.raises(ipcbus.ConnectionClosedError, match="too many connections"):
                        await spawn_renderer(setup.ipc_main, "echo")
                await wait_until(lambda: len(setup.ipc_main.get_all_web_contents()) < 3)
                async with ipcbus.connect(address, token=token) as c:
                    assert c.id == b.id + 1
            await setup.check_healthy()


async def test_a_flood_of_wrong_tokens_logs_a_few_warnings_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each connection that ends before its handshake is worth a warning, but a peer
    can end any number of them: main logs 10 a second at WARNING, says that it holds
    the rest back, then how many it held (at DEBUG each), and serves on."""
    caplog.set_level(logging.DEBUG, logger="ipcbus")
    with anyio.fail_after(20):
        async with bench() as setup:
            # an hour's interval, so that a slow machine does not begin a new one
            rate = WarningRate(logging.getLogger("ipcbus"), WHAT, interval=3600)
            setup.ipc_main._handshake_warnings = rate
            for _ in range(40):
                async with RawPeer.connect(setup.listener.address) as peer:
                    await peer.send(frames(Hello(PROTOCOL_VERSION, "wrong", os.getpid())))
                    assert (await peer.goodbye()).code is CloseCode.AUTHENTICATION_FAILED
            await wait_until(lambda: len(ended(caplog, logging.DEBUG)) == 30)
            await setup.check_healthy()
    assert len(ended(caplog, logging.WARNING)) == 10
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("more than 10 connections ended before their handshake" in m for m in said)


def ended(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The lines, at ``level`` exactly, that say a connection ended before its handshake."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and "before its handshake ended" in r.getMessage()
    ]


WHAT = "connections ended before their handshake"


def test_a_warning_rate_counts_what_it_held_back_when_the_next_interval_begins(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(_lograte.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="test.rate")
    rate = WarningRate(logging.getLogger("test.rate"), "things", burst=2, interval=1.0)
    for i in range(5):
        rate.warning("thing %d", i)
    now[0] += 1.0
    rate.warning("thing %d", 5)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "thing 0"),
        ("WARNING", "thing 1"),
        ("WARNING", "more than 2 things within 1 s: the rest are logged at DEBUG, and counted"),
        ("DEBUG", "thing 2"),
        ("DEBUG", "thing 3"),
        ("DEBUG", "thing 4"),
        ("WARNING", "3 more things were logged at DEBUG only"),
        ("WARNING", "thing 5"),
    ]


async def test_a_connected_renderers_end_is_not_held_back_with_the_unauthenticated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Peers without the token can end any number of connections; a renderer that
    completed its handshake and then breaks the protocol is another matter: its end
    is a WARNING even when their burst is used up."""
    caplog.set_level(logging.DEBUG, logger="ipcbus")
    with anyio.fail_after(20):
        async with bench() as setup:
            rate = WarningRate(logging.getLogger("ipcbus"), WHAT, interval=3600)
            setup.ipc_main._handshake_warnings = rate
            for _ in range(11):  # the burst, used up
                async with RawPeer.connect(setup.listener.address) as peer:
                    await peer.send(frames(Hello(PROTOCOL_VERSION, "wrong", os.getpid())))
                    assert (await peer.goodbye()).code is CloseCode.AUTHENTICATION_FAILED
            async with RawPeer.connect(setup.listener.address) as peer:
                welcome = await peer.handshake(setup.listener.token)
                await peer.send(raw_frame(b"\xc1"))  # not msgpack: a protocol error
                assert (await peer.goodbye()).code is CloseCode.PROTOCOL_ERROR
            await setup.disconnected(welcome.renderer_id)
    ours = [
        r
        for r in caplog.records
        if f"connection to renderer {welcome.renderer_id} ended" in r.getMessage()
    ]
    assert [r.levelno for r in ours] == [logging.WARNING]
