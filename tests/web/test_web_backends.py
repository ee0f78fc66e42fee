"""serve_web on every loop ipcbus supports: asyncio, uvloop and trio (anyio drives h11/wsproto)."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import anyio
import anyio.abc
import pytest

import ipcbus

from .helpers import http_get, page, status_of

LOOPS = ["asyncio", "trio"]
if importlib.util.find_spec("uvloop") is not None:
    LOOPS.append("uvloop")


async def _scenario(static_dir: Path) -> list[object]:
    results: list[object] = []
    ipc_main = ipcbus.IpcMain(shutdown_grace=2.0)
    ipc_main.handle("add", lambda event, a, b: a + b)
    with anyio.fail_after(20):
        async with ipc_main:
            web = await ipc_main.serve_web(static_dir)
            results.append(status_of(await http_get(web.port, "/")))
            async with page(web) as (renderer, _):
                results.append(await renderer.invoke("add", 1, 2))
                (contents,) = ipc_main.get_all_web_contents()
                got = anyio.Event()
                renderer.on("push", lambda event, arg: (results.append(arg), got.set()))
                await contents.send("push", "pushed")
                await got.wait()
    return results


@pytest.mark.parametrize("loop", LOOPS)
def test_serve_web_on_each_loop(loop: str, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>hi</p>")
    assert ipcbus.run(_scenario, tmp_path, loop=loop) == [200, 3, "pushed"]


async def _fast_path() -> list[object]:
    ipc_main = ipcbus.IpcMain(shutdown_grace=2.0)
    ipc_main.handle("add", lambda event, a, b: a + b)
    with anyio.fail_after(20):
        async with ipc_main:
            web = await ipc_main.serve_web()
            async with page(web) as (renderer, _):
                assert await renderer.invoke("add", 1, 2) == 3
                (contents,) = ipc_main.get_all_web_contents()
                frames = contents._endpoint.stream  # type: ignore[union-attr]
                raw = frames._stream.extra(anyio.abc.SocketAttribute.raw_socket)
                nodelay = raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                return [type(frames).__name__, bool(nodelay)]
    raise AssertionError("unreachable")


@pytest.mark.parametrize("loop", LOOPS)
def test_pages_take_the_asyncio_fast_path_with_nodelay(loop: str) -> None:
    """On asyncio and uvloop a page's replies are written from the reader, as over a
    unix socket (FastWebSocketFrames); trio, and ``IPCBUS_NO_FASTPATH=1``, keep anyio's
    streams. Either way the
    socket has TCP_NODELAY: a small reply never waits for the page's delayed ACK."""
    fast = loop != "trio" and not os.environ.get("IPCBUS_NO_FASTPATH")
    kind = "FastWebSocketFrames" if fast else "WebSocketFrames"
    assert ipcbus.run(_fast_path, loop=loop) == [kind, True]
