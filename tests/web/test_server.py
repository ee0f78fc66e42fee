"""serve_web over real loopback sockets, with a Python client speaking WebSocket like a page."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import msgspec
import pytest

import ipcbus
from ipcbus._wire import PROTOCOL_VERSION, CloseCode, Goodbye, Hello

from ..helpers import running_main, wait_for
from .helpers import own_origin, page
from .wsclient import Rejected, open_websocket


def hello(token: str) -> bytes:
    """The first message a page sends (process id 0: a page has none)."""
    return msgspec.msgpack.encode(Hello(PROTOCOL_VERSION, token, 0, 0))


async def test_a_page_is_a_renderer_with_its_web_contents() -> None:
    connected, gone = anyio.Event(), anyio.Event()
    details: list[Any] = []
    async with running_main() as ipc_main:
        ipc_main.handle("add", lambda event, a, b: a + b)

        @ipc_main.on_connect
        async def greet(contents: ipcbus.WebContents) -> None:
            await contents.send("hello", "early")
            connected.set()

        ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
        web = await ipc_main.serve_web()
        assert web.url == f"http://127.0.0.1:{web.port}/#token={web.token}"
        early: list[str] = []
        with anyio.fail_after(10):
            renderer = ipcbus.IpcRenderer()
            renderer.on("hello", lambda event, arg: early.append(arg))
            renderer.handle("title", lambda event: "the page")
            frames = await open_websocket("127.0.0.1", web.port, origin=own_origin(web))
            async with renderer._connect_stream(frames, web.token):
                await wait_for(connected)
                assert early == ["early"]  # sent in on_connect, before connect() returned
                assert await renderer.invoke("add", 1, 2) == 3
                (contents,) = ipc_main.get_all_web_contents()
                assert await contents.invoke("title") == "the page"
                with pytest.raises(ipcbus.NoHandlerError):
                    await renderer.invoke("nobody")
            await wait_for(gone)
    assert details[0].reason == "clean-exit"


async def test_a_client_without_origin_is_served_with_the_token() -> None:
    async with running_main() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            async with page(web, origin=None) as (renderer, _):
                assert await renderer.invoke("ping") == "pong"


async def test_a_wrong_token_is_refused_and_on_connect_never_runs() -> None:
    hooks: list[str] = []
    async with running_main() as ipc_main:
        ipc_main.on_connect(lambda contents: hooks.append("connect"))
        ipc_main.on_disconnect(lambda contents, d: hooks.append("disconnect"))
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            frames = await open_websocket("127.0.0.1", web.port, origin=own_origin(web))
            with pytest.raises(ipcbus.AuthenticationError):
                async with ipcbus.IpcRenderer()._connect_stream(frames, "wrong"):
                    pass
            # As a page sees it: a Goodbye, then a WebSocket close that says the same.
            frames = await open_websocket("127.0.0.1", web.port, origin=own_origin(web))
            await frames.send_raw(hello("wrong"))
            goodbye = msgspec.msgpack.decode(await frames.receive_frame(), type=Goodbye)
            assert goodbye.code is CloseCode.AUTHENTICATION_FAILED
            code, reason = await frames.wait_closed()
            await frames.aclose()
            assert code == 1008 and reason is not None and "token" in reason
            assert ipc_main.get_all_web_contents() == []
    assert hooks == []


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:{port}", "null"])
async def test_a_foreign_origin_is_refused_before_any_websocket(origin: str) -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web()
        with anyio.fail_after(10), pytest.raises(Rejected) as refused:
            await open_websocket("127.0.0.1", web.port, origin=origin.format(port=web.port))
    assert refused.value.status == 403
    assert b"origin" in refused.value.body


async def test_allowed_origins_let_another_origin_in() -> None:
    async with running_main() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        web = await ipc_main.serve_web(allowed_origins=["http://app.example:8080"])
        with anyio.fail_after(10):
            async with page(web, origin="http://app.example:8080") as (renderer, _):
                assert await renderer.invoke("ping") == "pong"
            async with page(web) as (renderer, _):  # its own origin still works
                assert await renderer.invoke("ping") == "pong"


async def test_localhost_is_loopback_and_its_own_origin() -> None:
    async with running_main() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        web = await ipc_main.serve_web(host="localhost")
        assert web.url.startswith(f"http://localhost:{web.port}/#token=")
        with anyio.fail_after(10):
            async with page(web, origin=f"http://localhost:{web.port}") as (renderer, _):
                assert await renderer.invoke("ping") == "pong"
            with pytest.raises(Rejected):  # localhost and 127.0.0.1 are different origins
                await open_websocket("localhost", web.port, origin=f"http://127.0.0.1:{web.port}")


async def test_a_non_loopback_host_without_ssl_is_refused() -> None:
    async with running_main() as ipc_main:
        with pytest.raises(ValueError, match="non-loopback"):
            await ipc_main.serve_web(host="0.0.0.0")
        with pytest.raises(ValueError, match="non-loopback"):
            await ipc_main.serve_web(host="192.0.2.1")


async def test_serve_web_needs_a_running_main() -> None:
    ipc_main = ipcbus.IpcMain()
    with pytest.raises(RuntimeError, match="async with ipc_main"):
        await ipc_main.serve_web()


async def test_the_server_closes_with_ipc_main_and_on_close() -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web()
        other = await ipc_main.serve_web()
        await other.aclose()
        with pytest.raises(OSError):
            await anyio.connect_tcp("127.0.0.1", other.port)
    with pytest.raises(OSError):
        await anyio.connect_tcp("127.0.0.1", web.port)


async def test_closing_the_server_leaves_connected_pages_connected() -> None:
    async with running_main() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            async with page(web) as (renderer, _):
                await web.aclose()
                assert await renderer.invoke("ping") == "pong"


async def test_closing_the_tab_is_a_clean_disconnect() -> None:
    gone = anyio.Event()
    details: list[Any] = []
    async with running_main() as ipc_main:
        ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            frames = await open_websocket("127.0.0.1", web.port, origin=own_origin(web))
            renderer = ipcbus.IpcRenderer()
            async with renderer._connect_stream(frames, web.token):
                # What a browser does when the tab goes: a close frame, 1001, no Goodbye.
                from wsproto.events import CloseConnection

                await frames.stream.send(frames.ws.send(CloseConnection(code=1001)))
                await wait_for(gone)
    assert details[0].reason == "clean-exit"
    assert "1001" in details[0].message


async def test_server_allowlist_and_guards_apply_to_pages() -> None:
    seen: list[str] = []
    async with running_main() as ipc_main:
        ipc_main.handle("ok", lambda event: "yes")
        ipc_main.handle("secret", lambda event: "no")
        ipc_main.add_guard(lambda event: seen.append(event.channel))
        web = await ipc_main.serve_web(allowed_channels=["ok"])
        with anyio.fail_after(10):
            async with page(web) as (renderer, _):
                assert await renderer.invoke("ok") == "yes"
                with pytest.raises(ipcbus.RemoteError, match="secret"):
                    await renderer.invoke("secret")
            # The allowlist is this server's: a local renderer is not narrowed.
            async with ipc_main.connect_local() as local:
                assert await local.invoke("secret") == "no"
    assert "ok" in seen


async def test_broadcast_and_scoped_ipc_reach_pages() -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web()
        got = anyio.Event()
        received: list[str] = []
        with anyio.fail_after(10):
            async with page(web) as (renderer, _):
                renderer.on("news", lambda event, arg: (received.append(arg), got.set()))
                (contents,) = ipc_main.get_all_web_contents()
                contents.ipc.handle("who", lambda event: f"page {event.sender.id}")
                assert await renderer.invoke("who") == f"page {contents.id}"
                await ipc_main.broadcast("news", "hi")
                await wait_for(got)
    assert received == ["hi"]


async def test_streams_flow_to_a_page() -> None:
    async with running_main() as ipc_main:

        @ipc_main.handle("count")
        async def count(event: ipcbus.IpcMainInvokeEvent, n: int) -> Any:
            for i in range(n):
                yield i

        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            async with page(web) as (renderer, _):
                assert [i async for i in renderer.stream("count", 50)] == list(range(50))


async def test_without_the_web_extra_serve_web_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ipcbus.web", None)  # as if h11/wsproto were missing
    async with running_main() as ipc_main:
        with pytest.raises(ImportError, match=r"pip install 'ipcbus\[web\]'"):
            await ipc_main.serve_web()
