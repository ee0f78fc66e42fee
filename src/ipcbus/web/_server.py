"""The web server: accept on host:port, answer HTTP with h11, hand ``/ipcbus`` to a WebSocket.

One task per TCP connection, in the server's own task group: it reads a
request head (at most :data:`MAX_HEAD` bytes, all of it within
``IpcMain.handshake_timeout`` seconds, so a slow or silent client holds
neither memory nor a task for long), answers from :class:`StaticSite`, and
keeps the connection alive for the next request. An upgrade to ``/ipcbus``
that passes the checks of :mod:`._upgrade` gets its 101; from then on the
socket belongs to a :class:`WebSocketFrames` that ``IpcMain`` serves as a
renderer in its own task group, like any socket it accepted. Closing the
server stops accepting and ends idle HTTP connections; connected pages stay
(as with ``Listener.close``) until they leave or ``IpcMain`` closes.

The token never travels in HTTP: the page reads it from the URL's fragment,
which browsers do not send, and presents it in its first WebSocket message.
Request lines are logged at DEBUG without their query.
"""

from __future__ import annotations

import logging
import ssl as _ssl
from collections.abc import Iterable
from functools import partial
from http import HTTPStatus
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

import anyio
import anyio.abc
import anyio.to_thread
import h11
from anyio.streams.stapled import MultiListener
from wsproto.utilities import generate_accept_token

from .._addresses import TcpAddress
from .._aio import AsyncioSocketStream
from .._listensocket import PatientListener, QuietTLSListener
from ._static import _CHUNK_SIZE, Response, StaticSite, opened
from ._upgrade import OriginPolicy, origin_of, refusal
from ._websocket import FastWebSocketFrames, WebSocketFrames

if TYPE_CHECKING:
    from ..main import IpcMain

__all__ = ("MAX_HEAD", "MAX_HTTP_CONNECTIONS", "WebServer", "start")

logger = logging.getLogger("ipcbus")

MAX_HEAD = 16 * 1024  # bytes of request line and headers
MAX_HTTP_CONNECTIONS = 256  # open at once, pages' WebSockets not counted
_STREAM_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError)


class WebServer:
    """A running web server for pages (``IpcMain.serve_web``); it closes with its ``IpcMain``.

    Attributes:
        url: what to open in a browser: ``http://127.0.0.1:PORT/#token=...``
            (the token in the fragment, which the browser never sends).
        host: the host it listens on, as given.
        port: the real port (when 0 was asked, the one the system chose).
        token: what a page must present in its first WebSocket message.
    """

    def __init__(
        self,
        ipc_main: IpcMain,
        site: StaticSite,
        *,
        host: str,
        port: int,
        token: str,
        scheme: str,
        allowed_origins: Iterable[str] | None,
        allowed_channels: frozenset[str] | None,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.scheme = scheme
        self.url = f"{scheme}://{_url_host(host)}:{port}/#token={quote(token, safe='')}"
        self._main = ipc_main
        self._site = site
        self._origins = OriginPolicy([origin_of(scheme, _url_host(host), port)], allowed_origins)
        self._allowed = allowed_channels
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()
        # HTTP connections open (not yet WebSockets), oldest first (a dict keeps order).
        self._http: dict[anyio.CancelScope, None] = {}

    def close(self) -> None:
        """Stop accepting and end idle HTTP connections; connected pages stay connected."""
        self._scope.cancel()

    async def aclose(self) -> None:
        """As :meth:`close`, and wait until the listening socket is closed."""
        self.close()
        await self._done.wait()

    def __repr__(self) -> str:
        return f"<WebServer {self.scheme}://{_url_host(self.host)}:{self.port}>"

    # ---- connections -------------------------------------------------

    async def _run(self, listener: anyio.abc.Listener[anyio.abc.ByteStream]) -> None:
        try:
            with self._scope:
                async with anyio.create_task_group() as connections:
                    await listener.serve(self._connection, task_group=connections)
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()
            self._main._listeners_open.discard(self)
            self._done.set()

    async def _connection(self, stream: anyio.abc.ByteStream) -> None:
        if len(self._http) >= MAX_HTTP_CONNECTIONS:
            # The one open longest goes, not this one, as at main's listeners
            # (``_serving.make_room_for_a_handshake``): a page loads and
            # upgrades at once, so connections held open cannot lock pages out.
            oldest = next(iter(self._http))
            del self._http[oldest]
            oldest.cancel()
            logger.warning(
                "web server: %d HTTP connections open; ended the one open longest",
                MAX_HTTP_CONNECTIONS,
            )
        handed_over = False
        scope = anyio.CancelScope()
        self._http[scope] = None
        try:
            with scope:
                handed_over = await self._serve_http(
                    stream, h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
                )
        except (*_STREAM_ERRORS, OSError, TimeoutError):
            pass  # the client went away, or stopped reading: nothing to answer
        except Exception:  # a bug here must not take the server (or IpcMain) down
            logger.exception("web server: internal error serving an HTTP connection")
        finally:
            self._http.pop(scope, None)
            if not handed_over:
                await anyio.aclose_forcefully(stream)

    async def _serve_http(self, stream: anyio.abc.ByteStream, conn: h11.Connection) -> bool:
        """Serve requests until the connection ends; ``True`` once it became a WebSocket."""
        while True:
            request: h11.Request | None = None
            with anyio.move_on_after(self._main.handshake_timeout):
                request = await self._read_request(stream, conn)
            if request is None:
                return False  # closed, timed out, or answered with an error
            target = bytes(request.target)
            method = request.method.decode("ascii", "replace")
            logger.debug("web server: %s %s", method, target.split(b"?", 1)[0].decode("latin-1"))
            if target.split(b"?", 1)[0] == b"/ipcbus":
                return await self._upgrade(stream, conn, request)
            # In a thread: looking a path up (resolve, stat) waits for the file
            # system, which must not hold the loop (the file is read in one too).
            # It is also the turn of the loop pipelined requests must leave
            # between them, or one client holds it.
            response = await anyio.to_thread.run_sync(self._site.respond, method, target)
            await self._send(stream, conn, response, method == "HEAD")
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return False
            conn.start_next_cycle()

    async def _read_request(
        self, stream: anyio.abc.ByteStream, conn: h11.Connection
    ) -> h11.Request | None:
        """The next request with no body, or ``None`` if there is none to answer."""
        try:
            event = await _next_event(stream, conn)
            if not isinstance(event, h11.Request):
                return None  # ConnectionClosed
            if len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers) > MAX_HEAD:
                # h11 judges only an incomplete head; one that arrived whole is judged here.
                await self._send_quietly(
                    stream, conn, self._site.error(431, "request head too large")
                )
                return None
            if isinstance(conn.next_event(), h11.EndOfMessage):
                return event  # no body (an upgrade request pauses here too)
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            message = "request head too large" if status == 431 else "malformed request"
            await self._send_quietly(stream, conn, self._site.error(status, message))
            return None
        # A body: nothing here takes one, and reading it would cost memory.
        await self._send_quietly(stream, conn, self._site.error(400, "request bodies are refused"))
        return None

    async def _upgrade(
        self, stream: anyio.abc.ByteStream, conn: h11.Connection, request: h11.Request
    ) -> bool:
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if (why := refusal(headers, self._origins)) is not None:
            status, message = why
            logger.warning("web server: refused a WebSocket upgrade (%d): %s", status, message)
            response = self._site.error(status, message)
            if status == 426:
                response.headers.append((b"sec-websocket-version", b"13"))
            await self._send_quietly(stream, conn, response)
            return False
        if self._main._tg is None or self._main._closing:
            await self._send_quietly(stream, conn, self._site.error(503, "shutting down"))
            return False
        accept = generate_accept_token(headers["sec-websocket-key"].encode("ascii"))
        await stream.send(
            conn.send(
                h11.InformationalResponse(
                    status_code=101,
                    reason=b"Switching Protocols",
                    headers=[
                        (b"upgrade", b"websocket"),
                        (b"connection", b"Upgrade"),
                        (b"sec-websocket-accept", accept),
                    ],
                )
            )
        )
        trailing, _ = conn.trailing_data
        # On the asyncio fast path, replies leave from the reader (FastWebSocketFrames).
        kind = FastWebSocketFrames if isinstance(stream, AsyncioSocketStream) else WebSocketFrames
        frames = kind(stream, bytes(trailing), self._main.max_frame_size)  # type: ignore[arg-type]
        serve = partial(self._main._serve, tcp=True, allowed=self._allowed, accepted=True)
        # A page is a renderer of IpcMain's, like one that came in on a socket.
        self._main._tg.start_soon(serve, frames, self.token, 0, None)
        return True

    async def _send(
        self, stream: anyio.abc.ByteStream, conn: h11.Connection, response: Response, head: bool
    ) -> None:
        timeout = self._main.send_timeout
        with anyio.fail_after(timeout) if timeout else anyio.CancelScope():
            start = h11.Response(
                status_code=response.status,
                headers=response.headers,
                reason=HTTPStatus(response.status).phrase,
            )
            data = conn.send(start)
            await stream.send(data)
            if not head:
                if response.file is not None:
                    async with opened(response.file) as file:
                        sent = 0
                        while sent < response.size and (chunk := await file.read(_CHUNK_SIZE)):
                            chunk = chunk[: response.size - sent]
                            sent += len(chunk)
                            await stream.send(conn.send(h11.Data(data=chunk)))
                    if sent < response.size:
                        # The file shrank while being sent: the announced
                        # length cannot be kept, so the connection ends.
                        raise anyio.BrokenResourceError
                elif response.body:
                    await stream.send(conn.send(h11.Data(data=response.body)))
            await stream.send(conn.send(h11.EndOfMessage()))

    async def _send_quietly(
        self, stream: anyio.abc.ByteStream, conn: h11.Connection, response: Response
    ) -> None:
        """An error response, then the connection closes (``Connection: close``)."""
        response.headers.append((b"connection", b"close"))
        try:
            await self._send(stream, conn, response, head=False)
        except h11.LocalProtocolError:
            pass  # too late in the exchange to answer


async def _next_event(stream: anyio.abc.ByteStream, conn: h11.Connection) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            # Reads no larger than the head limit, so h11 sees it exceeded
            # however the bytes arrive, before it holds much more.
            data = await stream.receive(MAX_HEAD)
        except anyio.EndOfStream:
            data = b""
        conn.receive_data(data)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def start(
    ipc_main: IpcMain,
    static_dir: str | None,
    *,
    host: str,
    port: int,
    token: str,
    ssl: _ssl.SSLContext | None,
    allowed_origins: Iterable[str] | None,
    allowed_channels: frozenset[str] | None,
    content_security_policy: str | None,
) -> WebServer:
    """Listen on ``host:port`` and serve pages in ``ipc_main``'s task group."""
    tg = ipc_main._require_running("serve_web")
    if not TcpAddress(host.strip("[]"), port).is_loopback and ssl is None:
        raise ValueError(
            f"refusing to serve pages over plain HTTP on non-loopback host {host!r}: anyone on "
            "the network could read the token and the traffic. Pass ssl=ssl.SSLContext(...) "
            "to use TLS, or a loopback host (127.0.0.1, ::1, localhost)"
        )
    site = StaticSite(static_dir, content_security_policy)
    tcp = await anyio.create_tcp_listener(local_host=host.strip("[]"), local_port=port)
    sockname = tcp.extra(anyio.abc.SocketAttribute.local_address)
    assert isinstance(sockname, tuple)
    # Accepting outlives running out of descriptors; plain connections take
    # the asyncio fast path where it is on (_transport.fast_path()).
    listener: anyio.abc.Listener[anyio.abc.ByteStream] = MultiListener(
        [
            PatientListener(cast(anyio.abc.SocketListener, one), fast=ssl is None)
            for one in tcp.listeners
        ]
    )
    if ssl is not None:
        listener = QuietTLSListener(
            listener, ssl, standard_compatible=False, handshake_timeout=ipc_main.handshake_timeout
        )
    server = WebServer(
        ipc_main,
        site,
        host=host,
        port=int(sockname[1]),
        token=token,
        scheme="https" if ssl is not None else "http",
        allowed_origins=allowed_origins,
        allowed_channels=allowed_channels,
    )
    ipc_main._listeners_open.add(server)
    tg.start_soon(server._run, listener)
    return server
