"""asgi_app under a real uvicorn on loopback, alone and mounted in Starlette."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import ipcbus
from ipcbus._wire import CloseCode
from ipcbus.web import asgi_app

from ..helpers import LoopTurns, running_main, wait_for
from .helpers import header, http_get, status_of
from .test_limits import closed_with
from .test_server import hello
from .wsclient import Rejected, open_websocket


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[int]:
    """``app`` under uvicorn (its wsproto WebSocket) on a loopback port bound here."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, ws="wsproto", lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            # Listening already: connections wait in the backlog until uvicorn
            # accepts them, so nothing has to wait for it to start.
            sock.listen(64)
            tg.start_soon(server.serve, [sock])
            try:
                yield port
            finally:
                server.should_exit = True
    finally:
        sock.close()


@pytest.fixture
def ui(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text("SECRET")
    ui = tmp_path / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<h1>asgi</h1>")
    return ui


async def _renderer_over(
    port: int, path: str, token: str, origin: str | None
) -> tuple[ipcbus.IpcRenderer, Any]:
    frames = await open_websocket("127.0.0.1", port, origin=origin, path=path)
    renderer = ipcbus.IpcRenderer()
    return renderer, renderer._connect_stream(frames, token)


async def test_asgi_app_under_uvicorn_serves_pages_and_renderers(ui: Path) -> None:
    gone = anyio.Event()
    details: list[Any] = []
    async with running_main() as ipc_main:
        ipc_main.handle("add", lambda event, a, b: a + b)
        ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
        app = asgi_app(ipc_main, ui)
        assert app.url_for("http://127.0.0.1:1/") == f"http://127.0.0.1:1/#token={app.token}"
        async with uvicorn_serving(app) as port:
            with anyio.fail_after(15):
                home = await http_get(port, "/")
                escape = await http_get(port, "/%2e%2e/secret.txt")
                assert status_of(home) == 200 and home.endswith(b"<h1>asgi</h1>")
                assert header(home, "content-security-policy") == "script-src 'self'"
                assert header(home, "x-content-type-options") == "nosniff"
                assert status_of(escape) == 404 and b"SECRET" not in escape
                origin = f"http://127.0.0.1:{port}"
                renderer, connected = await _renderer_over(port, "/ipcbus", app.token, origin)
                async with connected:
                    assert await renderer.invoke("add", 2, 3) == 5
                    (contents,) = ipc_main.get_all_web_contents()
                    renderer.handle("title", lambda event: "uvicorn page")
                    assert await contents.invoke("title") == "uvicorn page"
                await wait_for(gone)
                with pytest.raises(Rejected) as refused:
                    await open_websocket("127.0.0.1", port, origin="http://evil.example")
                assert refused.value.status == 403
    assert details[0].reason == "clean-exit"


async def test_asgi_wrong_token_and_oversize(ui: Path) -> None:
    hooks: list[str] = []
    async with running_main(max_frame_size=2048) as ipc_main:
        ipc_main.on_connect(lambda contents: hooks.append("connect"))
        app = asgi_app(ipc_main, ui)
        async with uvicorn_serving(app) as port:
            with anyio.fail_after(15):
                _, connected = await _renderer_over(port, "/ipcbus", "wrong", None)
                with pytest.raises(ipcbus.AuthenticationError):
                    async with connected:
                        pass
                frames = await open_websocket("127.0.0.1", port)
                await frames.send_raw(hello(app.token))
                await frames.receive_frame()  # Welcome
                await frames.send_raw(b"x" * 4096)
                goodbye, code, reason = await closed_with(frames)
    assert goodbye is not None and goodbye.code is CloseCode.FRAME_TOO_LARGE
    assert code == 1009 and reason is not None and "2048" in reason
    assert hooks == ["connect"]


async def test_asgi_app_mounted_in_starlette(ui: Path) -> None:
    async with running_main() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        pages = asgi_app(ipc_main, ui)
        app = Starlette(
            routes=[
                Route("/health", lambda request: PlainTextResponse("ok")),
                Mount("/ui", app=pages),
            ]
        )
        async with uvicorn_serving(app) as port:
            with anyio.fail_after(15):
                health = await http_get(port, "/health")
                home = await http_get(port, "/ui/")
                assert health.endswith(b"ok")
                assert home.endswith(b"<h1>asgi</h1>")
                origin = f"http://127.0.0.1:{port}"
                renderer, connected = await _renderer_over(port, "/ui/ipcbus", pages.token, origin)
                async with connected:
                    assert await renderer.invoke("ping") == "pong"


async def test_asgi_frames_give_the_loop_a_turn_while_the_server_has_messages_queued() -> None:
    """The ASGI server queues what it parsed, and taking a message from a queue that
    is not empty does not wait: a page flooding small messages must still leave the
    loop a turn every few hundred (as the built-in server does)."""
    from ipcbus.web._asgi import AsgiFrames

    messages = 5000
    queued = [{"type": "websocket.receive", "bytes": b"x"}] * messages

    async def receive() -> dict[str, Any]:
        return queued.pop()  # never waits: the server has them all already

    async def send(message: Any) -> None:
        pass

    frames = AsgiFrames(receive, send)
    with anyio.fail_after(10):
        async with LoopTurns() as loop:
            for _ in range(messages):
                assert await frames.receive_frame() == b"x"
    assert loop.turns >= messages // 512, loop.turns
