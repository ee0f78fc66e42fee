"""The end of a connection: whoever ends it, every waiter woken, the stream closed once.

A base class of ``_endpoint.Endpoint``. A connection ends in one of four
ways, all of which arrive here as the core's ``ConnectionTerminated``
(:meth:`Ending._terminated`): the peer said Goodbye or hung up, we closed it
(:meth:`Ending.close`, or :meth:`Ending.close_here` for a renderer leaving
its ``connect()`` block), the transport failed or a watchdog gave up on it
(:meth:`Ending.link_lost`), or the owner's task group was cancelled. Then
every waiting caller fails with ``ConnectionClosedError``, the dispatcher
stops taking calls, the owner is told, and the end proper runs: where no part
of it would wait, at once (:meth:`Ending._end_at_once`), else in a task
(``Endpoint.run``'s own, or :meth:`Ending._end`): what is left to send goes
out, the writer and the liveness watch stop, the stream is closed, and
whoever waits in ``close`` is woken.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from ._endpointparts import EndpointParts
from ._events import ConnectionTerminated
from ._protocol import CLOSED, Role
from ._wire import CloseCode

__all__ = ("Ending",)

logger = logging.getLogger("ipcbus")


class Ending(EndpointParts):
    """How a connection ends, from the core's ``ConnectionTerminated`` to a closed stream."""

    if not TYPE_CHECKING:
        __slots__ = ()  # its values are in Endpoint's slots (EndpointParts)

    @property
    def closed(self) -> anyio.Event:
        """Set once the connection has ended and its stream is closed."""
        if self._closed is None:
            self._closed = anyio.Event()
            if self._done:
                self._closed.set()
        return self._closed

    def link_lost(self, reason: str) -> None:
        """The transport failed (or a watchdog gave up on it): end the connection."""
        if self.conn.state is not CLOSED:
            logger.warning("connection to %s lost: %s", self.name, reason)
            self._warned = True
            self.conn.receive_eof(reason)
            self.handle_events()
        if self._reader_scope is not None:
            self._reader_scope.cancel()

    def _terminated(self, event: ConnectionTerminated) -> None:
        self.termination = event
        # Log each end once, at WARNING only if nobody else reports it: a
        # renderer refused during the handshake raises from connect(), and
        # that error (printed with its traceback) says the same.
        refused = self.conn.role is Role.RENDERER and not self.conn.renderer_id
        if event.code not in (None, CloseCode.NORMAL, CloseCode.SHUTDOWN) and not (
            refused or self._warned
        ):
            # Before its handshake a peer can end any number of connections:
            # the owner may hold a rate for those lines (``_lograte``).
            rate = self._owner.warnings if not self.conn.renderer_id else None
            (rate.warning if rate is not None else logger.warning)(
                "connection to %s ended: %s", self.name, event.reason
            )
        else:
            logger.debug("connection to %s ended: %s", self.name, event.reason)
        self.calls.wake_all()
        self.dispatcher.ended()  # nobody can receive their replies any more
        self._owner.terminated(event)
        if self._on_end is not None and not self._ending:
            self._ending = True
            if not self._end_at_once():
                self._tg.start_soon(self._end)

    async def _end(self) -> None:
        """The connection ended (``attach``): send what is left, close, tell the owner."""
        outbox = self.outbox
        try:
            # Mostly nothing is left: the peer said Goodbye, or ours went out
            # with close(). Draining costs a cancel scope and a loop turn.
            if not outbox.torn and not outbox.settled():
                await outbox.drain()  # a Goodbye
        finally:
            self._stop_parts()
            with anyio.CancelScope(shield=True):
                await self._teardown()
                assert self._on_end is not None
                await self._on_end()

    def _end_at_once(self) -> bool:
        """:meth:`_end`, here and now, if no part of it would wait; whether it ran.

        The usual end of a connection whose peer said Goodbye: no listener or
        handler of its still to run or end, nothing left to send, no writer
        task, a stream that closes without waiting. Its task,
        cancel scopes and their bookkeeping were most of what an end cost
        (``benchmarks/census.py``). The owner's part runs here too if it has
        nothing to wait for (``attach``'s ``on_end_now``), else in a task.
        """
        dispatcher, outbox = self.dispatcher, self.outbox
        if dispatcher.pending_starts or dispatcher.active or dispatcher.scopes:
            return False  # listeners and handlers still to run or end: they come first
        close_now = getattr(self.stream, "close_now", None)
        if close_now is None or not outbox.quiet() or not close_now():
            return False
        self._stop_parts()  # (quiet: nobody waits for a write, nothing is left to say)
        self._stream_closed()
        end_now = self._on_end_now
        if end_now is None or not end_now():
            assert self._on_end is not None
            self._tg.start_soon(self._on_end)
        return True

    async def _teardown(self) -> None:
        if self.termination is None:  # cancelled from outside
            self.conn.close(CloseCode.SHUTDOWN, "closed")
            self.handle_events()
        try:
            await self.outbox.last_words()
        finally:
            # Closed, and said so, whatever the last words met: whoever waits
            # in close() must not wait for ever.
            await self.stream.aclose()
            self._stream_closed()

    def _stop_parts(self) -> None:
        """The end has begun: the sweeper stops watching, the writer stops."""
        if self._liveness is not None and self._sweeper is not None:
            self._sweeper.forget(self._liveness)
        self.outbox.stop()

    def _stream_closed(self) -> None:
        """The stream is closed: tell whoever waits in :meth:`close`."""
        self._done = True
        if self._closed is not None:
            self._closed.set()

    async def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "closed") -> None:
        """Say Goodbye, stop reading and wait until the stream is closed."""
        if self.conn.state is not CLOSED:
            self.conn.close(code, reason)
            self.handle_events()
            self.outbox.write_at_once()  # the Goodbye, now if the stream takes it
        if self._reader_scope is not None:
            self._reader_scope.cancel()
        await self.closed.wait()

    async def close_here(self, code: CloseCode = CloseCode.NORMAL, reason: str = "closed") -> None:
        """:meth:`close`, ending the connection in the caller's task, which is shielded.

        For a renderer leaving its ``connect()`` block: the end (Goodbye,
        teardown) runs here rather than in a task of its own, which is most
        of what leaving costs when many renderers come and go.
        """
        if self._on_end is None or self._ending or self.conn.state is CLOSED:
            await self.close(code, reason)
            return
        self._ending = True  # ours: _terminated starts no task for it
        self.conn.close(code, reason)
        self.handle_events()
        self.outbox.write_at_once()
        await self._end()
