"""Connections main refuses before their handshake: a lone Goodbye, then a lingering close.

A renderer refused at ``max_connections``, or while main is out of file
descriptors (``_arrivals``), is told why in the protocol's own words, a
Goodbye frame made by the core, before its socket closes: its ``connect()``
then raises an error that says so rather than a broken pipe.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ._framestream import FrameStream
from ._protocol import Connection, Role
from ._wire import CloseCode

if TYPE_CHECKING:
    from .main import IpcMain

__all__ = ("OUT_OF_DESCRIPTORS", "SEND_ERRORS", "goodbye", "refuse")


def goodbye(code: CloseCode, reason: str) -> bytes:
    """The bytes of a lone Goodbye frame."""
    conn = Connection(Role.MAIN, token="")
    conn.close(code, reason)
    return bytes(conn.data_to_send())


#: What a connection refused while main is out of file descriptors gets.
OUT_OF_DESCRIPTORS = goodbye(
    CloseCode.TOO_MANY_CONNECTIONS, "too many connections: main is out of file descriptors"
)


async def refuse(main: IpcMain, stream: anyio.abc.ByteStream, code: CloseCode, reason: str) -> None:
    """Send a lone Goodbye and close: for connections refused before the handshake.

    A byte stream closes lingering: the renderer speaks first, so its Hello
    may arrive after our Goodbye, and a socket closed with it unread (or
    before it comes) fails the renderer's write with ``EPIPE`` or
    ``ECONNRESET``, which can lose the Goodbye still unread on its side: it
    would see a broken pipe instead of the reason. So we half-close and read
    (and drop) what it sends until it closes, ``_LINGER_BYTES`` and one
    second at most for all of it.
    """
    main._handshake_warnings.warning("refused a connection: %s", reason)
    with anyio.move_on_after(1, shield=True):
        with suppress(*SEND_ERRORS, *_LINGER_ENDS):
            await stream.send(goodbye(code, reason))
            if not isinstance(stream, FrameStream):  # a frame transport closes by message
                await stream.send_eof()
                lingered = 0
                while lingered < _LINGER_BYTES:
                    lingered += len(await stream.receive())
    with anyio.CancelScope(shield=True):
        await stream.aclose()


SEND_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
#: What ``refuse`` waits through besides those: the peer's end, and TLS below
#: 1.3, which cannot half-close.
_LINGER_ENDS = (anyio.EndOfStream, NotImplementedError)
_LINGER_BYTES = 64 * 1024  # a refused peer's bytes ``refuse`` reads before it closes anyway
