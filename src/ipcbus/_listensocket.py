"""Listening sockets: opening them, accepting, and refusing politely when out of descriptors.

Security defaults (SPEC section 8): a listener without an address lives in a
fresh 0700 directory and the socket is 0600; TCP refuses a non-loopback host
unless TLS is configured (``_addresses.check_tls``). ``_listening.Listener``
is main's handle on one of these; pages (``web._server``) listen through
``PatientListener`` and ``QuietTLSListener`` too.

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
import logging
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Final, cast

import anyio
import anyio.abc
from anyio.streams.stapled import MultiListener
from anyio.streams.tls import TLSListener

from ._addresses import Address, TcpAddress, UnixAddress, check_tls, parse_address
from ._aio import AsyncioSocketStream
from ._transport import fast_path

__all__ = ("CreatedListener", "PatientListener", "QuietTLSListener", "create_listener")

logger = logging.getLogger("ipcbus")

#: ``accept`` errors that mean "out of something for now" (descriptors, kernel memory).
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_FIRST_DELAY: Final = 0.01  # seconds before accepting again after the first such error...
_MAX_DELAY: Final = 1.0  # ...doubling up to this
_REFUSE_AT_ONCE: Final = 64  # waiting connections refused per attempt


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


class PatientListener(anyio.abc.Listener[anyio.abc.ByteStream]):
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
        return await _accept_fast(self._inner.extra(anyio.abc.SocketAttribute.raw_socket))

    async def serve(
        self,
        handler: Callable[[anyio.abc.ByteStream], Any],
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        assert task_group is not None  # ipcbus always runs connections in IpcMain's group
        listening = self._inner.extra(anyio.abc.SocketAttribute.raw_socket)
        # accept, inline: the socket and the fast path's answer looked up once, not
        # once per connection (anyio builds a dict of attributes for each lookup)
        fast = self._fast and fast_path()
        reserve = _open_reserve()
        delay = 0.0  # > 0: out of descriptors since the last accept that worked
        refused = 0
        try:
            while True:
                try:
                    if fast:
                        stream = await _accept_fast(listening)
                    else:
                        stream = await self._inner.accept()
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


async def _accept_fast(listening: socket.socket) -> anyio.abc.ByteStream | None:
    """The next connection as the asyncio fast path's stream; ``None`` if it left first."""
    sock, _ = await asyncio.get_running_loop().sock_accept(listening)
    try:
        if sock.family != socket.AF_UNIX:
            # as anyio's TCP listener does: a small reply must not wait
            # for the peer's delayed ACK (Nagle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await AsyncioSocketStream.from_socket(sock)
    except OSError:
        sock.close()  # the peer left before we wrapped it
        return None


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


class QuietTLSListener(TLSListener):
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
            PatientListener(listener, refusal, fast=True),
            UnixAddress(str(path)),
            [path, directory],
        )
    parsed = parse_address(address)
    if isinstance(parsed, UnixAddress):
        listener = await anyio.create_unix_listener(parsed.path, mode=0o600)
        patient = PatientListener(listener, refusal, fast=True)
        return CreatedListener(patient, parsed, [Path(parsed.path)])
    check_tls(parsed, ssl_context)
    tcp = await anyio.create_tcp_listener(local_host=parsed.host, local_port=parsed.port)
    sockname = tcp.extra(anyio.abc.SocketAttribute.local_address)
    assert isinstance(sockname, tuple)
    host, port = sockname[0], sockname[1]
    real = TcpAddress(parsed.host if parsed.host == "localhost" else str(host), int(port))
    plain = b"" if ssl_context is not None else refusal
    each: anyio.abc.Listener[anyio.abc.ByteStream] = MultiListener(
        [PatientListener(cast(anyio.abc.SocketListener, one), plain) for one in tcp.listeners]
    )
    if ssl_context is not None:
        each = QuietTLSListener(
            each, ssl_context, standard_compatible=False, handshake_timeout=handshake_timeout
        )
    return CreatedListener(each, real, [])
