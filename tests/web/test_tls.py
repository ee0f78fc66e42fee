"""serve_web with TLS: https:// pages, wss:// WebSockets, and non-loopback hosts allowed."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import anyio
import pytest

import ipcbus

from ..faults._raw import make_certificate
from ..helpers import running_main
from .wsclient import open_websocket

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = make_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


async def test_pages_over_tls(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = contexts
    async with running_main() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        web = await ipc_main.serve_web(ssl=server_ctx)
        assert web.url.startswith(f"https://127.0.0.1:{web.port}/#token=")
        with anyio.fail_after(10):
            # A plain-HTTP client fails its own connection only.
            async with await anyio.connect_tcp("127.0.0.1", web.port) as plain:
                await plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    while True:
                        await plain.receive()
            stream = await anyio.connect_tcp(
                "127.0.0.1", web.port, ssl_context=client_ctx, tls_standard_compatible=False
            )
            frames = await open_websocket(
                "127.0.0.1", web.port, origin=f"https://127.0.0.1:{web.port}", stream=stream
            )
            renderer = ipcbus.IpcRenderer()
            async with renderer._connect_stream(frames, web.token):
                assert await renderer.invoke("ping") == "pong"


async def test_a_non_loopback_host_is_allowed_with_tls(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(host="0.0.0.0", ssl=contexts[0])
        assert web.url.startswith("https://0.0.0.0:")
        await web.aclose()
