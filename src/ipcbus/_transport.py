"""Opening streams: connecting to main, wrapping a connected socket, the socket a child inherits.

``fast_path`` here is the one seam that decides whether a stream is the
asyncio fast path's (``_aio``) or anyio's. Addresses are ``_addresses``';
listening sockets, and accepting on them, ``_listensocket``'s.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
from typing import Final

import anyio
import anyio.abc

from ._addresses import UnixAddress, check_tls, parse_address
from ._aio import AsyncioSocketStream
from ._errors import ConnectionClosedError

__all__ = (
    "ENV_ADDRESS",
    "ENV_FD",
    "ENV_TOKEN",
    "child_socketpair",
    "connect",
    "connect_blocking",
    "fast_path",
    "peer_pid",
    "stream_from_socket",
    "tls_failed",
)

ENV_ADDRESS: Final = "IPCBUS_ADDRESS"
ENV_TOKEN: Final = "IPCBUS_TOKEN"
ENV_FD: Final = "IPCBUS_FD"


async def connect(
    address: str | os.PathLike[str], ssl_context: ssl.SSLContext | None
) -> anyio.abc.ByteStream:
    """Open a byte stream to a listening main process."""
    parsed = parse_address(address)
    try:
        if isinstance(parsed, UnixAddress):
            if fast_path():
                return await _connect_unix_fast(parsed.path)
            return await anyio.connect_unix(parsed.path)
        check_tls(parsed, ssl_context)
        if ssl_context is not None:
            return await anyio.connect_tcp(
                parsed.host, parsed.port, ssl_context=ssl_context, tls_standard_compatible=False
            )
        return await anyio.connect_tcp(parsed.host, parsed.port)
    except ssl.SSLError as exc:  # an OSError too, but "is main running?" would mislead
        raise tls_failed(address, exc) from exc
    except OSError as exc:
        raise ConnectionClosedError(
            f"cannot connect to main at {parsed}: {exc.strerror or exc}; "
            "is the main process running and listening there?"
        ) from exc


def connect_blocking(
    address: str | os.PathLike[str], ssl_context: ssl.SSLContext | None, timeout: float
) -> tuple[socket.socket, str | None]:
    """Open a blocking socket to a listening main (for ``ipcbus.sync``).

    Returns the socket and, for TLS, the host name to check main's
    certificate against (``None``: no TLS); the TLS handshake itself is the
    caller's (it runs over the socket it drives).
    """
    parsed = parse_address(address)
    try:
        if isinstance(parsed, UnixAddress):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(parsed.path)
                sock.settimeout(None)
            except BaseException:
                sock.close()
                raise
            return sock, None
        check_tls(parsed, ssl_context)
        sock = socket.create_connection((parsed.host, parsed.port), timeout=timeout)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, (parsed.host if ssl_context is not None else None)
    except TimeoutError:
        raise
    except OSError as exc:
        raise ConnectionClosedError(
            f"cannot connect to main at {parsed}: {exc.strerror or exc}; "
            "is the main process running and listening there?"
        ) from exc


def tls_failed(address: str | os.PathLike[str], exc: ssl.SSLError) -> ConnectionClosedError:
    """The error for a TLS handshake with main that failed."""
    return ConnectionClosedError(
        f"cannot connect to main at {parse_address(address)}: the TLS handshake failed; check "
        f"that ssl_context trusts main's certificate and matches its TLS settings ({exc})"
    )


def fast_path() -> bool:
    """Whether to use the asyncio fast path (``_aio``) here: on asyncio or uvloop,
    unless ``$IPCBUS_NO_FASTPATH`` is set. This is the one seam that decides it."""
    if os.environ.get("IPCBUS_NO_FASTPATH"):
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False  # trio, or no loop: anyio's streams
    return True


async def stream_from_socket(sock: socket.socket) -> anyio.abc.ByteStream:
    """Wrap a connected stream socket (a socketpair end, an inherited fd, an accepted one)."""
    if fast_path():
        return await AsyncioSocketStream.from_socket(sock)
    if sock.family == socket.AF_UNIX:
        return await anyio.abc.UNIXSocketStream.from_socket(sock)
    return await anyio.abc.SocketStream.from_socket(sock)


async def _connect_unix_fast(path: str) -> anyio.abc.ByteStream:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, path)
        return await stream_from_socket(sock)
    except BaseException:
        sock.close()
        raise


def child_socketpair() -> tuple[socket.socket, socket.socket]:
    """A connected pair: the first end for main, the second for the child to inherit."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.set_inheritable(True)
    return ours, theirs


def peer_pid(stream: anyio.abc.ByteStream) -> int | None:
    """The peer's process id from the kernel (unix sockets on Linux), or ``None``."""
    so_peercred = getattr(socket, "SO_PEERCRED", None)
    if so_peercred is None:
        return None
    try:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        if sock.family != socket.AF_UNIX:
            return None
        creds = sock.getsockopt(socket.SOL_SOCKET, so_peercred, struct.calcsize("3i"))
    except (anyio.TypedAttributeLookupError, OSError):
        return None
    pid: int = struct.unpack("3i", creds)[0]
    return pid or None
