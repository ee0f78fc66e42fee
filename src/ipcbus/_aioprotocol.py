"""The asyncio fast path's protocol: what asyncio's transport calls back as bytes arrive.

Half of the asyncio seam, with ``_aio``: these two modules are the one place
ipcbus drives a connection with asyncio's own transports (the house rule is
anyio first). ``_aio.AsyncioSocketStream`` is the stream the rest of ipcbus
sees; here is what the loop calls: ``SocketProtocol``, registered once for the
connection's life, which takes each read as it arrives (into one read
buffer per thread, or a window the reader offers) and keeps the flags the
stream checks, and the per-loop helpers the stream is built with (its
callbacks' context, ``call_soon``, ``create_future``), made once per loop,
not once per stream.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from ._capabilities import Reader

try:
    # anyio finds the running library through sniffio when sniffio is there.
    # sniffio sniffs asyncio from the current *task*, which a loop callback
    # has none of; it lets libraries name it instead, and we do for the
    # callbacks that hand reads to an endpoint (``deliver_to``), which start
    # tasks. Without sniffio, anyio asks asyncio for the running loop: fine.
    from sniffio import current_async_library_cvar as library_cvar
except ImportError:  # pragma: no cover - anyio >= 4.11 does not need sniffio
    library_cvar = None  # type: ignore[assignment]


def _name_the_library() -> None:
    """Name asyncio in the context this loop callback runs in, if nobody has.

    asyncio runs a reader callback in a copy of the context of whoever
    (re)armed it: :meth:`AsyncioSocketStream.resume_reading` called from a
    plain task, or ``transport.close()`` scheduling ``connection_lost``, arm
    it in a context that names no library, and the endpoint's
    ``start_soon`` then fails (anyio cannot tell asyncio from no loop at
    all). The reader callback's context lives as long as its handle, so
    after the first read this is one ``get``.
    """
    if library_cvar is not None and library_cvar.get() is None:
        library_cvar.set("asyncio")


#: What ``_aio`` takes from here: nothing else in ipcbus uses this module.
__all__ = (
    "PAUSE_READING_ABOVE",
    "SocketProtocol",
    "callback_context",
    "library_cvar",
    "soon_maker",
    "waiter_maker",
)

PAUSE_READING_ABOVE = 1024 * 1024  # buffered bytes; the kernel buffer then fills
_READ_SIZE = 256 * 1024  # the most one read takes from the socket
_scratch = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer, shared by every connection on its loop.

    A read fills it and :meth:`SocketProtocol.buffer_updated` copies the bytes out
    at once, before the loop reads from another socket, so one buffer serves
    them all. The alternative, ``sock.recv(256 KiB)``, allocates 256 KiB per
    read: above glibc's mmap threshold, so an mmap and a munmap for every
    read, however few bytes it brings (about 16 us against 2.5 us here).
    """
    buffer: memoryview | None = getattr(_scratch, "buffer", None)
    if buffer is None:
        buffer = _scratch.buffer = memoryview(bytearray(_READ_SIZE))
    return buffer


def callback_context(loop: asyncio.AbstractEventLoop) -> contextvars.Context:
    """The context ``call_soon`` callbacks run in: one per loop, made in a task.

    Copied from the first stream's task, with the library named (``library_cvar``).
    """
    cached = getattr(_scratch, "context", None)
    if cached is not None and cached[0] is loop:
        return cast(contextvars.Context, cached[1])
    context = contextvars.copy_context()
    _scratch.context = (loop, context)
    return context


def soon_maker(
    loop: asyncio.AbstractEventLoop, context: contextvars.Context
) -> Callable[[Callable[[], object]], object]:
    """``loop.call_soon`` in ``context``: one partial per loop and context, not per stream."""
    cached = getattr(_scratch, "soon_maker", None)
    if cached is not None and cached[0] is loop and cached[1] is context:
        # a string: a subscripted Callable would be built on every call
        return cast("Callable[[Callable[[], object]], object]", cached[2])
    maker = functools.partial(loop.call_soon, context=context)
    _scratch.soon_maker = (loop, context, maker)
    return maker


def waiter_maker(loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Future[Any]]:
    """``loop.create_future``, one bound method per loop (not one per stream)."""
    cached = getattr(_scratch, "waiter_maker", None)
    if cached is not None and cached[0] is loop:
        return cast("Callable[[], asyncio.Future[Any]]", cached[1])
    maker = loop.create_future
    _scratch.waiter_maker = (loop, maker)
    return maker


class SocketProtocol(asyncio.BufferedProtocol):
    __slots__ = (
        "buffer",
        "buffered",
        "can_write",
        "chunks",
        "closed",
        "eof",
        "error",
        "loop",
        "lost",
        "readable",
        "reader",
        "reading_paused",
        "sink",
        "sinking",
        "sunk",
        "told_end",
        "transport",
        "windowed",
        "writable",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buffer = _read_buffer()
        self.sink: memoryview | None = None  # where the next read goes (receive_into)
        self.sinking = False  # get_buffer lent the sink
        self.sunk = 0  # bytes the last read put in the sink
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.error: BaseException | None = None
        self.lost = False
        self.reading_paused = False
        self.readable: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        #: Writes may be handed to the transport now: connected, not lost, not
        #: over the high-water mark, not closed by us. One flag, kept by the
        #: callbacks below and ``AsyncioSocketStream.aclose``, so the checks
        #: before a write (once per renderer in a broadcast) are one load.
        self.can_write = False
        #: Resolved once the connection is lost; made when someone waits (aclose).
        self.closed: asyncio.Future[None] | None = None
        #: Given every read as it arrives (``deliver_to``), instead of ``chunks``.
        self.reader: Reader | None = None
        self.windowed = True  # the reader may offer a window (its last read said so)
        self.told_end = False  # the reader heard that nothing more will come

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its API.
        self.transport = cast(asyncio.Transport, transport)
        self.can_write = True

    def try_write(self, data: bytes | bytearray) -> bool:
        """Hand ``data`` to the transport if it takes writes now; whether it did.

        ``AsyncioSocketStream.try_write`` (this method, bound): see there.
        """
        transport = self.transport
        if self.can_write and transport is not None:  # (the second: for the type checker)
            transport.write(data)
            return True
        return False

    def get_buffer(self, sizehint: int) -> memoryview:
        # The loop calls buffer_updated right after the read, before anything else.
        if self.reader is not None:
            if not self.windowed:
                self.sinking = False
                return self.buffer  # the reader holds no part of a frame: no window
            window = self.reader.receive_window()
            self.sinking = window is not None
            return window if window is not None else self.buffer
        self.sinking = self.sink is not None
        return self.sink if self.sink is not None else self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        reader = self.reader
        if reader is not None:
            # _name_the_library's test, inline: a call only once per armed reader
            if library_cvar is not None and library_cvar.get() is None:
                _name_the_library()
            if self.sinking:
                self.sinking = False
                self.windowed = reader.received_into(nbytes)
            else:
                self.windowed = reader.received(self.buffer[:nbytes].tobytes())
            return
        if self.sinking:
            self.sinking = False
            self.sink = None  # one read only: later ones are buffered as usual
            self.sunk = nbytes
            self._wake_reader()
            return
        data = self.buffer[:nbytes].tobytes()
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > PAUSE_READING_ABOVE and not self.reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        self._tell_end()
        # Keep our side open: a peer that half-closed still reads our replies
        # (and our Goodbye) until we close.
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.can_write = False
        self.error = exc
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        self._wake_reader()
        self._wake_writer()
        self._tell_end()

    def _tell_end(self) -> None:
        if self.reader is not None and not self.told_end:
            self.told_end = True
            _name_the_library()
            self.reader.read_ended()

    def pause_writing(self) -> None:
        self.can_write = False
        if self.writable is None or self.writable.done():
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        # Once closed (by us, or after a fatal error) it stays unwritable.
        transport = self.transport
        self.can_write = not self.lost and transport is not None and not transport.is_closing()
        self._wake_writer()

    def _wake_reader(self) -> None:
        if self.readable is not None and not self.readable.done():
            self.readable.set_result(None)

    def _wake_writer(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
