"""TLS for a blocking link: an ``ssl.SSLObject`` over memory buffers.

Not an ``ssl.SSLSocket``: with the encryption kept apart from the socket,
the socket stays a plain one that any of the link's threads may poll, and
the link encrypts and decrypts under the lock that guards its
``Connection`` (``_blocking``).
"""

from __future__ import annotations

import select
import socket
import ssl
import time

from ._blockio import READ_SIZE, ready
from ._errors import ConnectionClosedError, IpcTimeoutError

__all__ = ("MemoryTLS",)


class MemoryTLS:
    """One link's TLS session, fed the bytes the link reads and giving what it writes."""

    __slots__ = ("_in", "_obj", "_out")

    def __init__(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)

    @property
    def pending(self) -> int:
        """Encrypted bytes waiting to be written (a record the reads produced)."""
        return self._out.pending

    def handshake(self, sock: socket.socket, deadline: float) -> None:
        """Complete the TLS handshake over ``sock`` before ``deadline`` (monotonic).

        Raises:
            IpcTimeoutError: it did not complete in time.
            ConnectionClosedError: main closed the connection during it.
            ssl.SSLError: it failed.
        """
        while True:
            try:
                self._obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            if out := self._out.read():
                sock.sendall(out)
            if not ready(sock.fileno(), select.POLLIN, deadline - time.monotonic()):
                raise IpcTimeoutError("the TLS handshake with main did not complete in time")
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionClosedError("main closed the connection during the TLS handshake")
            self._in.write(data)
        if out := self._out.read():
            sock.sendall(out)

    def wrap(self, data: bytearray) -> bytearray:
        """``data`` encrypted, with any TLS record the reads left to send."""
        try:
            if data:
                self._obj.write(data)
        except ssl.SSLError:  # a failed handshake, a broken stream: nothing can go out
            self._out.read()
            return bytearray()
        return bytearray(self._out.read())

    def unwrap(self, data: bytes) -> tuple[bytes, str | None]:
        """The plaintext in ``data``, and why the stream ended, if it did."""
        self._in.write(data)
        chunks: list[bytes] = []
        why = None
        try:
            while chunk := self._obj.read(READ_SIZE):
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            why = "main closed the TLS stream"
        except ssl.SSLError as exc:
            why = f"TLS error: {exc}"
        return b"".join(chunks), why
