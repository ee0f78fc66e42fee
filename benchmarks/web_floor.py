"""The floor of ``web_bench.py``: a raw WebSocket server on h11 + wsproto over anyio, no ipcbus.

The same libraries and the same event loop as ``ipcbus.web``, and nothing
else: h11 reads the upgrade request (any other request gets a blank page, so
the browser has a document of this origin to run the benchmark in), wsproto
does the WebSocket framing, anyio drives the socket. What it serves, one
binary WebSocket message each, msgpack ``[id, value]`` decoded and encoded
with msgspec (as ipcbus's core does):

* ``[0, value]``: a one-way message; counted, ``value`` added to a sum.
* ``[id, -1]`` (``id > 0``): the totals, answered ``[id, count, sum]``.
* ``[id, value]`` (``id > 0``): ``inc``, answered ``[id, value + 1]``.

It reads 64 KiB at a time (as ``ipcbus.web``) and writes the replies of one
read at once. A ping is answered, a close frame is answered and ends the
connection; anything else (a text message, a malformed body) closes the
WebSocket with 1003 or 1002, so a broken page script fails loudly.
"""

from __future__ import annotations

import anyio
import anyio.abc
import h11
import msgspec
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import generate_accept_token

__all__ = ("PATH", "serve")

PATH = b"/floor"
_READ_SIZE = 65536
_PAGE = b"<!doctype html><meta charset=utf-8><title>web_bench floor</title><p>floor"
_decode = msgspec.msgpack.Decoder(tuple[int, int]).decode
_encode = msgspec.msgpack.Encoder().encode


class _Counts:
    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0


async def serve(host: str = "127.0.0.1", port: int = 0) -> tuple[anyio.abc.Listener, int]:
    """A listener on ``host:port`` and its port; ``listener.serve(connection)`` runs it."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    address = listener.extra(anyio.abc.SocketAttribute.local_address)
    return listener, int(address[1])  # type: ignore[index]


async def connection(stream: anyio.abc.ByteStream) -> None:
    """Serve one TCP connection: HTTP until an upgrade to ``PATH``, then the WebSocket."""
    async with stream:
        http = h11.Connection(h11.SERVER)
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                try:
                    http.receive_data(await stream.receive(_READ_SIZE))
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
                continue
            if not isinstance(event, h11.Request):
                return  # the client closed (or sent a body: not ours to read)
            if event.target == PATH:
                await _websocket(stream, http, event)
                return
            while not isinstance(http.next_event(), h11.EndOfMessage):
                pass  # a GET has no body; EndOfMessage is already there
            headers = [(b"content-type", b"text/html"), (b"content-length", b"%d" % len(_PAGE))]
            await stream.send(http.send(h11.Response(status_code=200, headers=headers)))
            await stream.send(http.send(h11.Data(data=_PAGE)) + http.send(h11.EndOfMessage()))
            http.start_next_cycle()


async def _websocket(
    stream: anyio.abc.ByteStream, http: h11.Connection, request: h11.Request
) -> None:
    key = dict(request.headers).get(b"sec-websocket-key")
    if key is None:
        await stream.send(
            http.send(h11.Response(status_code=400, headers=[(b"content-length", b"0")]))
        )
        return
    switch = h11.InformationalResponse(
        status_code=101,
        headers=[
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(key)),
        ],
    )
    await stream.send(http.send(switch))
    ws = Connection(ConnectionType.SERVER)
    ws.receive_data(http.trailing_data[0])
    counts = _Counts()
    parts: list[bytes] = []
    while True:
        out = bytearray()
        for event in ws.events():
            if isinstance(event, BytesMessage):
                parts.append(event.data)
                if not event.message_finished:
                    continue
                body = parts[0] if len(parts) == 1 else b"".join(parts)
                parts.clear()
                try:
                    reply = _answer(body, counts)
                except msgspec.DecodeError as exc:  # ValidationError too
                    out += ws.send(CloseConnection(1002, f"not [id, value]: {exc}"))
                    await stream.send(out)
                    return
                if reply is not None:
                    out += ws.send(Message(data=reply))
            elif isinstance(event, Ping):
                out += ws.send(event.response())
            elif isinstance(event, CloseConnection):
                out += ws.send(event.response())
                await stream.send(out)
                return
            elif isinstance(event, TextMessage):
                out += ws.send(CloseConnection(1003, "binary messages only"))
                await stream.send(out)
                return
        if out:
            await stream.send(out)
        try:
            data = await stream.receive(_READ_SIZE)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return
        ws.receive_data(data)


def _answer(body: bytes, counts: _Counts) -> bytes | None:
    id_, value = _decode(body)
    if id_ == 0:
        counts.count += 1
        counts.total += value
        return None
    if value == -1:
        return _encode((id_, counts.count, counts.total))
    return _encode((id_, value + 1))
