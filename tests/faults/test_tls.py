"""TLS for tcp:// (issue 3, last bullet).

A self-signed certificate for 127.0.0.1 is made at test time with the
``openssl`` command line tool. Plain TCP to a non-loopback host is refused
with a message that says how to enable TLS; with an ``ssl.SSLContext`` on
both sides it works, and peers that fail the TLS handshake end only their
own connection.
"""

from __future__ import annotations

import logging
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

import ipcbus

from ._raw import RawPeer, bench, make_certificate

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    cert, key = make_certificate(tmp_path_factory.mktemp("tls"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    yield Tls(server, client)


@pytest.fixture(autouse=True)
def _capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def test_tls_on_loopback(tls: Tls) -> None:
    with anyio.fail_after(10):
        async with bench() as setup:
            listener = await setup.ipc_main.listen("tcp://127.0.0.1:0", ssl_context=tls.server)
            async with ipcbus.connect(
                listener.address, token=listener.token, ssl_context=tls.client
            ) as renderer:
                assert await renderer.invoke("add", 20, 22) == 42
                assert await renderer.invoke("add", b"x" * 300_000, b"y") == b"x" * 300_000 + b"y"
            await setup.check_healthy()


async def test_tls_on_a_non_loopback_host(tls: Tls) -> None:
    """Listening on every interface needs TLS; with it, renderers connect and call."""
    with anyio.fail_after(10):
        async with bench() as setup:
            listener = await setup.ipc_main.listen("tcp://0.0.0.0:0", ssl_context=tls.server)
            address = f"tcp://127.0.0.1:{_port(listener.address)}"
            async with ipcbus.connect(address, token=listener.token, ssl_context=tls.client) as r:
                assert await r.invoke("add", 1, 2) == 3
            await setup.check_healthy()


async def test_plain_tcp_to_a_non_loopback_host_is_refused_with_how_to_enable_tls() -> None:
    with anyio.fail_after(10):
        async with bench() as setup:
            with pytest.raises(ValueError, match="ssl_context") as listening:
                await setup.ipc_main.listen("tcp://0.0.0.0:0")
            assert "TLS" in str(listening.value)
            with pytest.raises(ValueError, match="ssl_context") as connecting:
                async with ipcbus.connect("tcp://192.0.2.1:9", token="t"):
                    pass
            assert "TLS" in str(connecting.value)
            await setup.check_healthy()


async def test_wrong_token_over_tls_is_refused(tls: Tls) -> None:
    with anyio.fail_after(10):
        async with bench() as setup:
            listener = await setup.ipc_main.listen("tcp://127.0.0.1:0", ssl_context=tls.server)
            with pytest.raises(ipcbus.AuthenticationError):
                async with ipcbus.connect(listener.address, token="wrong", ssl_context=tls.client):
                    pass
            await setup.check_healthy()


async def test_client_that_does_not_trust_the_certificate_fails_clearly(tls: Tls) -> None:
    with anyio.fail_after(10):
        async with bench() as setup:
            listener = await setup.ipc_main.listen("tcp://127.0.0.1:0", ssl_context=tls.server)
            untrusting = ssl.create_default_context()  # system CAs only
            with pytest.raises(ipcbus.ConnectionClosedError, match="the TLS handshake failed"):
                async with ipcbus.connect(
                    listener.address, token=listener.token, ssl_context=untrusting
                ):
                    pass
            async with ipcbus.connect(
                listener.address, token=listener.token, ssl_context=tls.client
            ) as renderer:
                assert await renderer.invoke("add", 1, 2) == 3
            await setup.check_healthy()


@pytest.mark.parametrize("sends", [b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05hello"])
async def test_plaintext_garbage_to_a_tls_port_ends_only_that_connection(
    tls: Tls, sends: bytes
) -> None:
    with anyio.fail_after(10):
        async with bench() as setup:
            listener = await setup.ipc_main.listen("tcp://127.0.0.1:0", ssl_context=tls.server)
            async with RawPeer.connect(listener.address) as peer:
                await peer.send(sends)
                await peer.send_eof()
                await peer.until_closed()
            async with ipcbus.connect(
                listener.address, token=listener.token, ssl_context=tls.client
            ) as renderer:
                assert await renderer.invoke("add", 1, 2) == 3
            await setup.check_healthy()


async def test_silent_client_on_a_tls_port_is_dropped_after_handshake_timeout(tls: Tls) -> None:
    """A TCP client that never starts its TLS handshake holds nothing for long."""
    with anyio.fail_after(10):
        async with bench(handshake_timeout=0.3) as setup:
            listener = await setup.ipc_main.listen("tcp://127.0.0.1:0", ssl_context=tls.server)
            async with RawPeer.connect(listener.address) as peer:
                with anyio.fail_after(3):
                    await peer.until_closed()
            await setup.check_healthy()


async def test_tls_renderer_dies_pending_call_fails(tls: Tls, tmp_path: Path) -> None:
    """main's invoke on a TLS renderer that goes away fails at once, no hang."""
    with anyio.fail_after(10):
        async with bench() as setup:
            listener = await setup.ipc_main.listen("tcp://127.0.0.1:0", ssl_context=tls.server)
            renderer = ipcbus.IpcRenderer()
            blocking = anyio.Event()

            @renderer.handle("block")
            async def block(event: ipcbus.IpcRendererEvent) -> None:
                blocking.set()
                await anyio.sleep_forever()

            errors: list[Exception] = []
            async with anyio.create_task_group() as tg:
                async with renderer.connect(
                    listener.address, token=listener.token, ssl_context=tls.client
                ):
                    contents = setup.ipc_main.from_id(renderer.id)
                    assert contents is not None

                    async def call() -> None:
                        try:
                            await contents.invoke("block")
                        except Exception as exc:
                            errors.append(exc)

                    tg.start_soon(call)
                    await blocking.wait()
            assert len(errors) == 1 and isinstance(errors[0], ipcbus.ConnectionClosedError)
            await setup.check_healthy()
