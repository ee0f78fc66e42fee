"""The fast path's reads: the stream hands each read to the connection as it arrives.

A base class of ``_endpoint.Endpoint``, so a read's common case stays one
object's methods. On the asyncio fast path (``_aio``) main's connections
have no reader task: ``attach`` gives the stream this connection as its
``Reader``, and the stream's callback calls :meth:`DeliveredReads.received`
with each read. The read is fed to the sans-I/O ``Connection``, its events
are dispatched, and what they queued is written, all in that callback.
``Endpoint.run`` does the same work in a task for any other transport.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from ._capabilities import DeliversReads
from ._endpointparts import EndpointParts
from ._events import Event, ReplyReceived
from ._liveness import own_watcher
from ._protocol import CLOSED

__all__ = ("DeliveredReads",)

logger = logging.getLogger("ipcbus")


class DeliveredReads(EndpointParts):
    """Reads handed over by the stream (``attach``): bytes in, dispatch, one write."""

    if not TYPE_CHECKING:
        __slots__ = ()  # its values are in Endpoint's slots (EndpointParts)

    def attach(
        self,
        on_end: Callable[[], Coroutine[Any, Any, None]],
        on_end_now: Callable[[], bool] | None = None,
    ) -> bool:
        """Have the stream hand us each read as it arrives, if it can; else ``False``.

        Then no task reads for this connection (the stream's callback does,
        through :meth:`received`), and none waits while it is idle: about 20
        objects fewer per connection for the cycle collector, and no task
        switch per read. ``on_end`` runs, in a task, once the connection has
        ended and its stream is closed. ``on_end_now``, if given, is tried
        first where the end needs no task: it does ``on_end``'s work at once
        and returns ``True``, or does nothing and returns ``False``.
        """
        if not hasattr(self.stream, "deliver_to"):
            return False
        self._on_end = on_end
        self._on_end_now = on_end_now
        self.outbox.lazy = True
        if self._liveness is not None:
            if self._sweeper is None:
                self._sweeper = own_watcher(self._tg, self.stream)
            self._sweeper.watch(self._liveness)
        self.outbox.kick()
        cast(DeliversReads, self.stream).deliver_to(self)
        return True

    def receive_window(self) -> memoryview | None:
        return self.conn.receive_buffer()

    def received(self, data: bytes) -> bool:
        conn = self.conn
        if conn.state is CLOSED:
            return False
        self.reads += 1
        event = conn.receive_alone(data)
        if event is not None:  # a call, a reply or a message alone in its read: the usual read
            if event.__class__ is ReplyReceived:
                # A caller's every read. Calls.replied, inline; nothing else of
                # _after_read applies: a reply queues no output, starts no handler.
                waiter = self.calls.waiters.get(event.request_id)
                if waiter is not None and not waiter.done():  # a future: not cancelled
                    waiter.set_result(event)
                return False
            self._after_read([event])
            return False
        holding = conn.receive_data(data)
        self._after_read(conn.events_received())
        while conn.more:  # a long read, a batch at a time (Connection.batch)
            holding = conn.receive_more()
            self._after_read(conn.events_received())
        return holding

    def received_into(self, nbytes: int) -> bool:
        conn = self.conn
        holding = conn.received_into(nbytes)
        self.reads += 1
        self._after_read(conn.events_received())
        while conn.more:
            holding = conn.receive_more()
            self._after_read(conn.events_received())
        return holding

    def read_ended(self) -> None:
        if self.conn.state is not CLOSED:
            self.conn.receive_eof()
            self._after_read(self.conn.events_received())

    def _after_read(self, events: list[Event]) -> None:
        """What ``run`` does after each read, from the stream's callback: ``events``
        are the read's."""
        conn = self.conn
        dispatcher = self.dispatcher
        outbox = self.outbox
        try:
            outbox.reading = True
            try:
                dispatcher.dispatch_batch(events)
            finally:
                outbox.reading = False
            # Pausing needs a handler running (max_in_flight >= 1) or output piling
            # up: only then ask (one call fewer on every other read)
            if (
                (
                    dispatcher.active
                    or conn.pending_output > dispatcher.output_bound
                    or dispatcher.relay_wait
                )
                and dispatcher.must_pause()
                and not dispatcher.paused
            ):
                self.outbox.kick()  # replies already made go out first
                dispatcher.paused = True
                dispatcher.resume_reading = self._resume_reading
                cast(DeliversReads, self.stream).pause_reading()
            if conn.pending_output:
                if self._welcomed:
                    self._welcomed = False  # see run
                    outbox.kick()
                elif outbox.direct is not None and not outbox.writing:
                    outbox.write_now()  # Outbox.write_at_once, inline (once per read)
                else:
                    outbox.kick()
        except Exception:
            # A bug in ipcbus: this connection ends, every other one carries on.
            logger.exception("internal error serving %s", self.name)
            self.link_lost("internal error (logged)")

    def _resume_reading(self) -> None:
        if self.conn.state is not CLOSED:
            cast(DeliversReads, self.stream).resume_reading()
