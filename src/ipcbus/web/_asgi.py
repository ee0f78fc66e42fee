"""The same routes as an ASGI 3 application, to mount in Starlette or FastAPI.

``asgi_app(ipc_main)`` answers ``http`` scopes from the same
:class:`StaticSite` as ``serve_web`` and serves a ``websocket`` scope on
``/ipcbus`` as a renderer of ``ipc_main`` for as long as it lasts, in the
ASGI server's task for that connection. The ASGI server owns the sockets, the
HTTP parsing and the WebSocket framing; it also assembles each WebSocket
message before the app sees it, so its own limit (uvicorn's ``ws_max_size``,
16 MiB by default) bounds what a page can make it buffer; ``max_frame_size``
is then applied to the whole message, as for a socket.

The server's own origin is taken from the connection's ``server`` and
``scheme``; behind a proxy, or when the server listens on every interface,
name the public origin in ``allowed_origins``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import anyio.lowlevel
import anyio.to_thread

from .._framestream import FrameStream
from .._registry import channel_set
from .._wire import CloseCode
from ._static import _CHUNK_SIZE, DEFAULT_CSP, Response, StaticSite, opened
from ._upgrade import OriginPolicy, origin_of
from ._websocket import EVENTS_PER_TURN, close_code, goodbye_in, said_goodbye

if TYPE_CHECKING:
    from ..main import IpcMain

__all__ = ("AsgiApp", "asgi_app")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiApp:
    """An ASGI 3 app serving pages as renderers of one ``IpcMain`` (see :func:`asgi_app`).

    Attributes:
        token: what a page must present; put it in the page's URL as
            ``#token=...`` (``url_for(base)`` does it).
    """

    def __init__(
        self,
        ipc_main: IpcMain,
        static_dir: str | None = None,
        *,
        token: str | None = None,
        allowed_origins: Iterable[str] | None = None,
        allowed_channels: Iterable[str] | None = None,
        content_security_policy: str | None = DEFAULT_CSP,
    ) -> None:
        if isinstance(allowed_origins, str):
            raise TypeError("allowed_origins must be a collection of origins, not a str")
        self.token = token if token is not None else secrets.token_hex(32)
        self._main = ipc_main
        self._site = StaticSite(static_dir, content_security_policy)
        self._allowed_origins = tuple(allowed_origins or ())
        self._allowed = channel_set(allowed_channels)

    def url_for(self, base: str) -> str:
        """``base`` (where the app is mounted, e.g. ``http://127.0.0.1:8000/``) with the token."""
        return f"{base.split('#', 1)[0]}#token={quote(self.token, safe='')}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, send: Send) -> None:
        method = scope["method"]
        # In a thread: a path's lookup waits for the file system (_server.py too).
        response = await anyio.to_thread.run_sync(self._site.respond, method, _target(scope))
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        if method != "HEAD":
            await _send_body(response, send)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        if _target(scope).split(b"?", 1)[0] != b"/ipcbus":
            await send({"type": "websocket.close", "code": 1008})  # before accept: a 403
            return
        server = scope.get("server")
        scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
        own = [origin_of(scheme, server[0], server[1])] if server and server[1] else []
        if not OriginPolicy(own, self._allowed_origins).allows(headers.get("origin")):
            await send({"type": "websocket.close", "code": 1008})  # before accept: a 403
            return
        if self._main._tg is None or self._main._closing:
            await send({"type": "websocket.close", "code": 1013})
            return
        await send({"type": "websocket.accept"})
        frames = AsgiFrames(receive, send)
        await self._main._serve(
            frames, self.token, 0, None, tcp=True, allowed=self._allowed, accepted=True
        )


def asgi_app(
    ipc_main: IpcMain,
    static_dir: str | None = None,
    *,
    token: str | None = None,
    allowed_origins: Iterable[str] | None = None,
    allowed_channels: Iterable[str] | None = None,
    content_security_policy: str | None = DEFAULT_CSP,
) -> AsgiApp:
    """``serve_web``'s routes as an ASGI 3 app, to mount in Starlette or FastAPI.

    Pages connect to ``/ipcbus`` under the mount point; they are served while
    ``ipc_main`` runs (``async with ipc_main:``, e.g. in the app's lifespan).
    The options mean what they mean for ``IpcMain.serve_web``.
    """
    return AsgiApp(
        ipc_main,
        static_dir,
        token=token,
        allowed_origins=allowed_origins,
        allowed_channels=allowed_channels,
        content_security_policy=content_security_policy,
    )


class AsgiFrames(FrameStream):
    """A page's WebSocket as the ASGI server gives it: one whole message per ``receive``."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._close: tuple[int, str] | None = None
        self._done = False  # closed by either side
        self._taken = 0  # messages taken since the last turn of the loop

    async def receive_frame(self) -> bytes:
        # The ASGI server queues what it parsed, and taking from a queue that is
        # not empty does not wait: a turn of the loop every EVENTS_PER_TURN
        # messages, before taking the next (nothing is in hand then), as the
        # built-in server does (_websocket.py).
        self._taken += 1
        if self._taken >= EVENTS_PER_TURN:
            self._taken = 0
            await anyio.lowlevel.checkpoint()
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                if message.get("bytes") is not None:
                    body: bytes = message["bytes"]
                    return body
                self._close = (1003, "text message: ipcbus speaks binary WebSocket messages")
                return said_goodbye(CloseCode.PROTOCOL_ERROR, f"protocol error: {self._close[1]}")
            if kind == "websocket.disconnect":
                self._done = True
                code = message.get("code", 1005)
                if code in (1000, 1001, 1005):
                    return said_goodbye(CloseCode.NORMAL, f"the page closed its WebSocket ({code})")
                raise anyio.EndOfStream

    async def send_frame(self, body: memoryview) -> None:
        if (goodbye := goodbye_in(body)) is not None and self._close is None:
            self._close = close_code(goodbye)
        if self._done:
            raise anyio.ClosedResourceError
        try:
            await self._send({"type": "websocket.send", "bytes": bytes(body)})
        except (OSError, RuntimeError) as exc:  # the ASGI server's "already closed"
            self._done = True
            raise anyio.BrokenResourceError from exc

    async def send_eof(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._done:
            return
        self._done = True
        code, reason = self._close or (1000, "")
        with anyio.move_on_after(1, shield=True):
            try:
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
            except (OSError, RuntimeError):
                pass


def _target(scope: Scope) -> bytes:
    """The undecoded request path below the mount point (``raw_path`` when the server gives it)."""
    root = scope.get("root_path", "")
    raw: bytes | None = scope.get("raw_path")
    if raw is not None:
        raw = raw.split(b"?", 1)[0]
        encoded_root = quote(root).encode("latin-1")
        if root and raw.startswith(encoded_root):
            raw = raw[len(encoded_root) :]
        return raw or b"/"
    path: str = scope["path"]
    if root and path.startswith(root):
        path = path[len(root) :]
    return quote(path or "/").encode("latin-1")


async def _send_body(response: Response, send: Send) -> None:
    if response.file is None:
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        return
    async with opened(response.file) as file:
        remaining = response.size
        while remaining > 0 and (chunk := await file.read(min(_CHUNK_SIZE, remaining))):
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if remaining:
        raise OSError(f"{response.file} shrank while being sent")


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer a standalone server's lifespan events (a mount's parent app answers its own)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
