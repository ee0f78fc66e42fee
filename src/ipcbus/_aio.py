"""The asyncio fast path: a socket stream driven by an ``asyncio.BufferedProtocol``.

This module and ``_aioprotocol`` are the asyncio seam: the one place ipcbus
drives a connection with asyncio's own transports (the house rule is anyio
first). Here is the stream the rest of ipcbus sees; ``_aioprotocol`` holds
the ``SocketProtocol`` the transport calls back and the helpers made once per
loop. anyio's unix socket stream yields to the loop before every read and
write and registers, then unregisters, the socket with the selector for every
read that has to wait; on the selector loop that also formats ``repr(sock)``
(two syscalls) each time. A Protocol is registered once for the connection's
life and hands over data as it arrives. benchmarks/PROFILE.md and
docs/performance.md show what it buys; ``IPCBUS_NO_FASTPATH=1`` turns it off.

The class implements anyio's ``ByteStream`` interface with anyio's exception
semantics, so the rest of ipcbus cannot tell the difference: ``EndOfStream``
when the peer closed, ``BrokenResourceError`` when the link failed,
``ClosedResourceError`` once we closed it (also in a pending ``receive``).
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.abc

from ._aioprotocol import (
    PAUSE_READING_ABOVE,
    SocketProtocol,
    callback_context,
    library_cvar,
    soon_maker,
    waiter_maker,
)
from ._capabilities import Reader

__all__ = ("LARGE_WRITE", "AsyncioSocketStream")

#: Writes larger than this go through ``send``, a slice at a time (see there).
LARGE_WRITE = 1024 * 1024
_SLICE = 256 * 1024
_FAIR_READS = 16  # reads served without waiting before we yield to the loop once


class AsyncioSocketStream(anyio.abc.ByteStream):
    """anyio ``ByteStream`` over an asyncio transport; build it with :meth:`from_socket`."""

    def __init__(
        self,
        transport: asyncio.Transport,
        protocol: SocketProtocol,
        context: contextvars.Context | None = None,
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        # What ``call_soon``'s callbacks run in: a context that names the
        # library (see ``library_cvar``), one per loop rather than copied per call.
        self._context = context if context is not None else contextvars.copy_context()
        #: A call's reply waiter (``MakesWaiters``): a bare future, which
        #: awaiting adds no frame to and setting costs no Python call.
        self.new_waiter = waiter_maker(protocol.loop)
        #: ``call_soon(callback)``: run ``callback`` on the loop's next turn, in
        #: that context (``WritesNow``); the loop's own method, no Python call.
        self.call_soon = soon_maker(protocol.loop, self._context)
        #: :meth:`write_nowait` if :meth:`can_write_nowait`; whether the bytes
        #: were written (``WritesNow``). The protocol's own method: a write
        #: from ``Outbox.write_now`` or a broadcast (every call, every
        #: renderer) then touches the protocol only, not this object too.
        self.try_write = protocol.try_write
        self._closed = False
        self._streak = 0

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> AsyncioSocketStream:
        """Take over a connected stream socket (unix or TCP)."""
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        # The transport's callbacks run in a copy of this context, made now.
        named = library_cvar.set("asyncio") if library_cvar is not None else None
        try:
            context = callback_context(loop)
            transport, protocol = await loop.connect_accepted_socket(
                lambda: SocketProtocol(loop), sock
            )
        finally:
            if named is not None and library_cvar is not None:
                library_cvar.reset(named)
        return cls(transport, protocol, context)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        protocol = self._protocol
        if protocol.chunks and self._streak < _FAIR_READS:
            self._streak += 1  # data is here: no need to visit the loop...
        else:
            self._streak = 0  # ...but now and then we do, so a flood cannot starve others
            while not protocol.chunks:
                self._check_readable()
                protocol.readable = protocol.loop.create_future()
                await protocol.readable
            if protocol.readable is None:
                await asyncio.sleep(0)
            protocol.readable = None
        if self._closed:
            raise anyio.ClosedResourceError
        chunk = protocol.chunks.popleft()
        if len(chunk) > max_bytes:
            protocol.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered <= PAUSE_READING_ABOVE // 2:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def receive_into(self, buffer: memoryview) -> int:
        """Read at most ``len(buffer)`` bytes into ``buffer``; how many (at least 1).

        Bytes already received are copied in; otherwise the next read from
        the socket goes straight into ``buffer``, with no copy (large frames).
        """
        protocol = self._protocol
        if not protocol.chunks:
            protocol.sunk = 0
            protocol.sink = buffer
            try:
                while not protocol.sunk and not protocol.chunks:
                    self._check_readable()
                    protocol.readable = protocol.loop.create_future()
                    await protocol.readable
            finally:
                protocol.sink = None
                protocol.readable = None
            if self._closed:
                raise anyio.ClosedResourceError
            if protocol.sunk:
                return protocol.sunk
        chunk = await self.receive(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def _check_readable(self) -> None:
        protocol = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        if protocol.error is not None:
            raise anyio.BrokenResourceError from protocol.error
        if protocol.eof or protocol.lost:
            raise anyio.EndOfStream

    async def send(self, item: bytes) -> None:
        """Write ``item``; wait while the transport holds more than its high-water mark.

        A large item (over ``LARGE_WRITE``) goes to the transport one slice at
        a time, each once the previous one has left: the transport copies what
        the socket does not take at once, and copying (and allocating) a
        whole large frame costs more than the extra turns of the loop.
        """
        self._check_writable()
        transport = self._transport
        if len(item) <= LARGE_WRITE:
            transport.write(item)
            await self._drained()
            return
        view = memoryview(item)
        transport.set_write_buffer_limits(high=0)  # paused while anything is left over
        try:
            for start in range(0, len(view), _SLICE):
                await self._drained()
                self._check_writable()
                transport.write(view[start : start + _SLICE])
        finally:
            if not self._closed and not transport.is_closing():
                transport.set_write_buffer_limits()  # the defaults again
        await self._drained()

    def _check_writable(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._protocol.lost or self._transport.is_closing():
            raise anyio.BrokenResourceError from self._protocol.error

    async def _drained(self) -> None:
        """Return once the transport is not paused (over its high-water mark)."""
        protocol = self._protocol
        writable = protocol.writable
        if writable is not None and not writable.done():
            await writable
            if protocol.lost:
                raise anyio.BrokenResourceError from protocol.error

    def deliver_to(self, reader: Reader) -> None:
        """From now on, hand every read to ``reader`` from the loop's callback.

        No task waits in :meth:`receive` any more: ``reader`` runs as the data
        arrives. What was read before is handed over first.
        """
        protocol = self._protocol
        protocol.reader = reader
        chunks = protocol.chunks
        while chunks and protocol.reader is reader:
            protocol.windowed = reader.received(chunks.popleft())
        protocol.buffered = 0
        if protocol.reading_paused:
            protocol.reading_paused = False
            self.resume_reading()
        if protocol.eof or protocol.lost:
            protocol._tell_end()

    def pause_reading(self) -> None:
        """Read nothing more from the socket until :meth:`resume_reading`."""
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def can_write_nowait(self) -> bool:
        """Whether :meth:`write_nowait` may be called: open, and not over high water.

        A transport that failed on this loop turn (asyncio closes it at once
        and tells us on the next turn) may still say yes: what is written to
        it is dropped, as it would be had it reached the kernel just before.
        """
        return self._protocol.can_write

    def closing(self) -> bool:
        """Whether the transport is closing: it failed on this loop turn, or was closed.

        :meth:`can_write_nowait` learns of a failure a turn later; a writer
        that writes many times per turn (a page's replies) asks this too, as
        asyncio logs each write to a failed transport.
        """
        return self._transport.is_closing()

    def write_nowait(self, data: bytes | bytearray) -> None:
        """Hand ``data`` to the transport now; only after :meth:`can_write_nowait`,
        and only up to ``LARGE_WRITE`` bytes (larger ones: :meth:`send`)."""
        self._transport.write(data)

    def unsent(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet."""
        return self._transport.get_write_buffer_size()

    def call_later(self, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        """Run ``callback`` on the loop in ``delay`` seconds, in the stream's context
        (``HasTimers``: a connection's liveness looks, without a task)."""
        return self._protocol.loop.call_later(delay, callback, context=self._context)

    def time(self) -> float:
        return self._protocol.loop.time()

    async def send_eof(self) -> None:
        if self._transport.can_write_eof():
            self._transport.write_eof()

    def close_now(self) -> bool:
        """:meth:`aclose` without waiting, if the transport holds nothing unsent
        (the usual end); whether it closed. Else nothing is done: await ``aclose``."""
        if not self._closed and self._transport.get_write_buffer_size():
            return False
        self._shut()
        return True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._shut()
        if self._transport.get_write_buffer_size():
            protocol = self._protocol
            # A peer that stopped reading must not hold the socket open forever.
            if protocol.closed is None and not protocol.lost:
                protocol.closed = protocol.loop.create_future()
            try:
                with anyio.move_on_after(1):
                    if protocol.closed is not None:
                        await asyncio.shield(protocol.closed)
            finally:
                # Also when cancelled (``anyio.aclose_forcefully`` closes in a
                # cancelled scope): the socket must not outlive its stream.
                if not protocol.lost:
                    self._transport.abort()

    def _shut(self) -> None:
        """Stop reading and writing, and have the transport close once it has written."""
        if self._closed:
            return
        self._closed = True
        protocol = self._protocol
        protocol.can_write = False
        protocol.reader = None  # no more reads for it: the connection is over
        protocol.chunks.clear()  # unread input: nobody will read it now
        protocol.buffered = 0
        protocol._wake_reader()  # a pending receive raises ClosedResourceError
        self._transport.close()  # flushes what is buffered, then closes

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        sock = self._transport.get_extra_info("socket")
        return {
            anyio.abc.SocketAttribute.raw_socket: lambda: sock,
            anyio.abc.SocketAttribute.family: lambda: sock.family,
        }
