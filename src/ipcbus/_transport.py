"""Addresses, listening sockets, connecting, and the socket a spawned child inherits.

Addresses are strings (``"unix:/path"``, ``"tcp://host:port"``) or a
``pathlib.Path`` (a unix socket). Security defaults (SPEC section 8): a
listener without an address lives in a fresh 0700 directory and the socket is
0600; TCP refuses a non-loopback host unless TLS is configured.

Accepting outlives running out of descriptors (docs/reliability.md, "Hostile
peers"): an ``accept`` that fails with ``EMFILE``/``ENFILE`` (or the kernel
short of memory) is retried after a short delay that doubles up to a second,
logged once per episode, and meanwhile the connections waiting in the backlog
are refused: each listener keeps one descriptor in reserve, and frees it to
accept, answer with a Goodbye and close one waiting connection at a time.
Renderers already connected are served throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import struct
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import anyio
import anyio.abc
from anyio.streams.stapled import MultiListener
from anyio.streams.tls import TLSListener

from ._aio import AsyncioSocketStream
from ._errors import ConnectionClosedError

__all__ = (
    "ENV_ADDRESS",
    "ENV_FD",
    "ENV_TOKEN",
    "Address",
    "TcpAddress",
    "UnixAddress",
    "child_socketpair",
    "connect",
    "connect_blocking",
    "create_listener",
    "parse_address",
    "peer_pid",
    "stream_from_socket",
    "tls_failed",
)

ENV_ADDRESS: Final = "IPCBUS_ADDRESS"
ENV_TOKEN: Final = "IPCBUS_TOKEN"
ENV_FD: Final = "IPCBUS_FD"

logger = logging.getLogger("ipcbus")

#: ``accept`` errors that mean "out of something for now" (descriptors, kernel memory).
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_FIRST_DELAY: Final = 0.01  # seconds before accepting again after the first such error...
_MAX_DELAY: Final = 1.0  # ...doubling up to this
_REFUSE_AT_ONCE: Final = 64  # waiting connections refused per attempt


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


Address = UnixAddress | TcpAddress


def parse_address(address: str | os.PathLike[str]) -> Address:
    """Parse ``"unix:/path"``, ``"tcp://host:port"`` or a path.

    Raises:
        ValueError: the address has another form; the message shows the right ones.
    """
    if isinstance(address, os.PathLike):
        return UnixAddress(os.fspath(address))
    if not isinstance(address, str):
        raise TypeError(f"address must be a str or a path, not {type(address).__name__}")
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if path:
            return UnixAddress(path)
    elif address.startswith("tcp://"):
        rest = address[len("tcp://") :]
        host, sep, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if sep and host and port.isdigit() and int(port) < 65536:
            return TcpAddress(host, int(port))
    raise ValueError(
        f"unsupported address {address!r}: use 'unix:/path/to/socket', "
        "'tcp://127.0.0.1:PORT' or a pathlib.Path"
    )


def _check_tls(address: TcpAddress, ssl_context: ssl.SSLContext | None) -> None:
    if not address.is_loopback and ssl_context is None:
        raise ValueError(
            f"refusing plain TCP to non-loopback host {address.host!r}: anyone on the network "
            "could connect or listen in. Pass ssl_context=ssl.SSLContext(...) to use TLS, or "
            "use a loopback host (127.0.0.1, ::1, localhost) or a unix socket"
        )


class CreatedListener:
    """An anyio listener plus the address it really has and what to clean up."""

    def __init__(
        self,
        listener: anyio.abc.Listener[anyio.abc.ByteStream],
        address: Address,
        remove: list[Path],
    ) -> None:
        self.listener = listener
        self.address = address
        self._remove = remove

    async def serve(
        self,
        handler: Callable[[anyio.abc.ByteStream], Coroutine[Any, Any, None]],
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        """Accept connections forever, running ``handler(stream)`` in ``task_group``."""
        await self.listener.serve(handler, task_group=task_group)

    def remove_files(self) -> None:
        """Delete the socket file and private directory we created, if any."""
        for path in self._remove:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self._remove = []


class _PatientListener(anyio.abc.Listener[anyio.abc.ByteStream]):
    """One socket listener whose ``serve`` survives running out of descriptors.

    Args:
        inner: anyio's listener on one socket.
        refusal: bytes sent to a connection refused for want of descriptors
            (a Goodbye; empty for TLS, where plain bytes mean nothing).
        fast: accept on the asyncio fast path (``_aio``), if it is on.
    """

    def __init__(
        self, inner: anyio.abc.SocketListener, refusal: bytes = b"", fast: bool = False
    ) -> None:
        self._inner = inner
        self._refusal = refusal
        self._fast = fast

    async def accept(self) -> anyio.abc.ByteStream | None:
        """The next connection, or ``None`` if it left before we could wrap it."""
        if not (self._fast and fast_path()):
            return await self._inner.accept()
        listening = self._inner.extra(anyio.abc.SocketAttribute.raw_socket)
        sock, _ = await asyncio.get_running_loop().sock_accept(listening)
        try:
            if sock.family != socket.AF_UNIX:
                # as anyio's TCP listener does: a small reply must not wait
                # for the peer's delayed ACK (Nagle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return await stream_from_socket(sock)
        except OSError:
            sock.close()  # the peer left before we wrapped it
            return None

    async def serve(
        self,
        handler: Callable[[anyio.abc.ByteStream], Any],
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        assert task_group is not None  # ipcbus always runs connections in IpcMain's group
        listening = self._inner.extra(anyio.abc.SocketAttribute.raw_socket)
        reserve = _open_reserve()
        delay = 0.0  # > 0: out of descriptors since the last accept that worked
        refused = 0
        try:
            while True:
                try:
                    stream = await self.accept()
                except Exception as exc:
                    if not _out_of_capacity(exc):
                        raise
                    if not delay:
                        logger.warning(
                            "cannot accept connections on %s: %s; refusing new ones until "
                            "descriptors are free (connected renderers are still served)",
                            _where(listening),
                            _out_of_capacity(exc),
                        )
                    reserve, count = _refuse_waiting(listening, reserve, self._refusal)
                    refused += count
                    await anyio.sleep(delay or _FIRST_DELAY)
                    delay = min(max(delay * 2, _FIRST_DELAY * 2), _MAX_DELAY)
                    continue
                if delay:
                    logger.warning(
                        "accepting connections on %s again (refused %d meanwhile)",
                        _where(listening),
                        refused,
                    )
                    delay, refused = 0.0, 0
                    if reserve < 0:
                        reserve = _open_reserve()
                if stream is not None:
                    task_group.start_soon(handler, stream)
        finally:
            if reserve >= 0:
                os.close(reserve)

    async def aclose(self) -> None:
        await self._inner.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._inner.extra_attributes


def _out_of_capacity(exc: BaseException) -> str | None:
    """What ran out, if ``exc`` (or its cause: anyio wraps it) is such an accept error."""
    for error in (exc, exc.__cause__):
        if isinstance(error, OSError) and error.errno in _CAPACITY_ERRNOS:
            return os.strerror(error.errno)
    return None


def _open_reserve() -> int:
    """A descriptor to give up when out of them, so we can still refuse politely; -1 if none."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _refuse_waiting(listening: socket.socket, reserve: int, refusal: bytes) -> tuple[int, int]:
    """Accept, answer and close connections waiting in the backlog, one descriptor at a time.

    Frees the ``reserve`` descriptor for it and takes it back after; returns
    ``(reserve, refused)``. All without awaiting, so no other task takes the
    freed descriptor meanwhile.
    """
    if reserve < 0 or listening.gettimeout() != 0.0:
        return reserve, 0  # no descriptor to spare, or accept() could block
    os.close(reserve)
    refused = 0
    for _ in range(_REFUSE_AT_ONCE):
        try:
            sock, _ = listening.accept()
        except OSError:
            break  # none waiting (BlockingIOError), or still out of descriptors
        with sock:
            sock.setblocking(False)
            if refusal:
                with contextlib.suppress(OSError):
                    sock.send(refusal)  # a few dozen bytes: the socket buffer takes them
        refused += 1
    return _open_reserve(), refused


def _where(listening: socket.socket) -> str:
    try:
        name = listening.getsockname()
    except OSError:
        return "the listener"
    return f"unix:{name}" if isinstance(name, str) else f"tcp://{name[0]}:{name[1]}"


class _TLSListener(TLSListener):
    """anyio's TLS listener, logging a failed handshake as one line, not a traceback.

    Any local process can reach a TCP port; a stray or hostile client must not
    fill the log with tracebacks.
    """

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: anyio.abc.AnyByteStream) -> None:
        await anyio.aclose_forcefully(stream)
        if isinstance(exc, anyio.get_cancelled_exc_class()) or not isinstance(exc, Exception):
            raise exc
        logger.warning(
            "refused a connection: TLS handshake failed: %s", repr(exc) if not str(exc) else exc
        )


async def create_listener(
    address: str | os.PathLike[str] | None,
    ssl_context: ssl.SSLContext | None,
    handshake_timeout: float = 10.0,
    refusal: bytes = b"",
) -> CreatedListener:
    """Start listening on ``address`` (a private unix socket if ``None``).

    ``refusal`` is what a connection refused while out of descriptors is sent
    before it is closed (plain TCP and unix sockets only).
    """
    if address is None:
        directory = Path(tempfile.mkdtemp(prefix="ipcbus-"))  # mkdtemp makes it 0700
        path = directory / "main.sock"
        listener = await anyio.create_unix_listener(path, mode=0o600)
        return CreatedListener(
            _PatientListener(listener, refusal, fast=True),
            UnixAddress(str(path)),
            [path, directory],
        )
    parsed = parse_address(address)
    if isinstance(parsed, UnixAddress):
        listener = await anyio.create_unix_listener(parsed.path, mode=0o600)
        patient = _PatientListener(listener, refusal, fast=True)
        return CreatedListener(patient, parsed, [Path(parsed.path)])
    _check_tls(parsed, ssl_context)
    tcp = await anyio.create_tcp_listener(local_host=parsed.host, local_port=parsed.port)
    sockname = tcp.extra(anyio.abc.SocketAttribute.local_address)
    assert isinstance(sockname, tuple)
    host, port = sockname[0], sockname[1]
    real = TcpAddress(parsed.host if parsed.host == "localhost" else str(host), int(port))
    plain = b"" if ssl_context is not None else refusal
    each: anyio.abc.Listener[anyio.abc.ByteStream] = MultiListener(
        [_PatientListener(cast(anyio.abc.SocketListener, one), plain) for one in tcp.listeners]
    )
    if ssl_context is not None:
        each = _TLSListener(
            each, ssl_context, standard_compatible=False, handshake_timeout=handshake_timeout
        )
    return CreatedListener(each, real, [])


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
        _check_tls(parsed, ssl_context)
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
        _check_tls(parsed, ssl_context)
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
