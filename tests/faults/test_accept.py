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

import socket
import sys
from pathlib import Path

import anyio
import anyio.abc
import pytest

import ipcbus
from ipcbus._framing import FrameDecoder
from ipcbus._wire import Body, CloseCode, Goodbye

from ..helpers import RENDERERS, child_env, spawn_renderer
from ._raw import RawPeer, bench, frames, warnings_logged

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
    from ._raw import _BODY_DECODER

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
                while await healthy.invoke("fds") > NOFILE - 20:
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
