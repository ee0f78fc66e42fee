"""The write side of one connection: batching, flushes, backpressure, torn writes.

Frames are queued in the ``Connection``'s outbox by whoever makes them and
leave in as few writes as possible:

* A stream that writes without waiting (``_capabilities.WritesNow``, the
  asyncio fast path) is written from a loop callback scheduled once per loop
  turn: every frame queued in that turn leaves in one write, without a task
  switch.
* Otherwise, and on the fast path while congested, for a large write or while
  closing, the writer task does the write: whatever is queued by the time it
  runs goes out in one write (one "batch"). The task, and the last words of
  the connection's end, are the other base class, ``_writertask.WriterTask``.
* Callers that must know their frame left (``send`` over the high-water mark:
  backpressure) wait for that batch; ``invoke`` waits only for its reply. The
  reader never waits for a write: if both peers waited to write while neither
  read, both would wait forever.
* A write interrupted by cancellation may leave half a frame on the wire
  ("torn"), so it ends the connection.

What senders call (``queue_message``, ``post_message``, ``queued``: queue a
frame, have it sent, wait above the high-water mark) is a base class,
``_queueing.Queueing``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc

from ._aio import LARGE_WRITE
from ._capabilities import WritesNow
from ._errors import ConnectionClosedError
from ._protocol import OPEN, Connection
from ._queueing import Queueing
from ._writertask import STREAM_ERRORS, Batch, WriterTask

if TYPE_CHECKING:
    from ._dispatch import Dispatcher
    from ._endpoint import Endpoint

__all__ = ("MAX_PENDING_OUTPUT", "STREAM_ERRORS", "Outbox", "event_factory")

#: Unsent bytes beyond which a connection's reader pauses (``_admission``), and
#: beyond which readers that relay port messages here pause too (``when_room``).
MAX_PENDING_OUTPUT = 4 * 1024 * 1024

logger = logging.getLogger("ipcbus")


def event_factory() -> Callable[[], anyio.Event]:
    """The running backend's Event class, called directly.

    ``anyio.Event()`` looks the backend up on every call (about 1 us); an
    endpoint makes several Events per call, always on the same backend.
    """
    return type(anyio.Event())


class Outbox(Queueing, WriterTask):
    """Sends what one connection's core has queued, in as few writes as it can."""

    __slots__ = (
        "_batch",
        "_endpoint",
        "_new_event",
        "_soon",
        "_stopped",
        "_stream",
        "_try_write",
        "_wake",
        "_writer_coro",
        "_writer_scope",
        "admission",
        "conn",
        "direct",
        "lazy",
        "reading",
        "room_waiters",
        "torn",
        "write_soon",
        "writes",
        "writing",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        conn: Connection,
        stream: anyio.abc.ByteStream,
        new_event: Callable[[], anyio.Event],
    ) -> None:
        self._endpoint = endpoint
        self.conn = conn
        self._stream = stream
        self._new_event = new_event
        #: The stream, if it can write without waiting (the asyncio fast path).
        self.direct: WritesNow | None = (
            cast(WritesNow, stream) if hasattr(stream, "write_nowait") else None
        )
        # The direct stream's call_soon and try_write, kept here: the write of
        # every call then touches no attribute of the stream object itself
        # (with many connections, each object a call touches is a likely
        # cache miss; docs/performance.md, "Cache misses per call").
        direct = self.direct
        self._soon = direct.call_soon if direct is not None else None
        self._try_write = direct.try_write if direct is not None else None
        #: Told when a write made room (a reader paused on unsent output reads on).
        self.admission: Dispatcher | None = None
        #: A ``write_now`` callback is scheduled: what is queued leaves on the next turn.
        self.write_soon = False
        self._wake: anyio.Event | None = None  # set: the writer has something to send
        self._writer_scope: anyio.CancelScope | None = None  # the writer task's
        self._stopped = False  # the connection ended: no writer task any more
        self._writer_coro: Coroutine[Any, Any, None] | None = None
        # What the next write will carry, made only when someone waits for it.
        self._batch: Batch | None = None
        self.torn = False  # a write was interrupted: the stream is out of step
        self.writing = False  # the writer task is in a write
        self.writes = 0  # writes started so far: the watchdog's proof of progress
        #: The writer task is started when a write cannot be made from a
        #: callback (congested, large, closing) and ends when it has caught up.
        self.lazy = False
        #: The reader is dispatching a read, and writes what it queued right
        #: after: ``kick`` need not schedule a write of its own meanwhile.
        self.reading = False
        #: Called once unsent output is back under MAX_PENDING_OUTPUT, or the
        #: connection ended (``when_room``: readers paused on what they relayed here).
        self.room_waiters: list[Callable[[], None]] | None = None

    @property
    def name(self) -> str:
        """The connection's name, for logs and errors ("renderer 3")."""
        return self._endpoint.name

    # ---- scheduling writes ---------------------------------------------

    def next_batch(self) -> Batch:
        """The batch the next write will carry (made now if nobody asked before)."""
        batch = self._batch
        if batch is None:
            batch = self._batch = Batch(self._new_event)
        return batch

    def kick(self) -> None:
        """Have what is queued sent (``next_batch()`` is what will carry it)."""
        soon = self._soon  # set exactly when self.direct is
        if soon is not None and not self.writing:
            if self.reading:
                return  # the reader writes once its read is dispatched
            if not self.write_soon:
                self.write_soon = True
                soon(self.write_now)
            return
        self._wake_writer()

    def _wake_writer(self) -> None:
        """Have the writer task write what is queued; start it if need be."""
        wake = self._wake
        if wake is None:
            if self._stopped:
                self.next_batch().fail()  # no writer any more: nobody waits forever
                return
            if not self.lazy:
                return  # not started yet: ``start`` kicks
            self.start()
            wake = self._wake
            assert wake is not None
        if not wake.is_set():
            wake.set()

    def stop(self) -> None:
        """The connection ended: end the writer task (a write in progress is torn)."""
        self._stopped = True
        if self._writer_scope is not None:
            self._writer_scope.cancel()
        self._room_for_waiters()  # nothing will pile up here any more

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once unsent output is under ``MAX_PENDING_OUTPUT`` again."""
        if self._stopped:
            callback()
            return
        if self.room_waiters is None:
            self.room_waiters = []
        self.room_waiters.append(callback)

    def _room_for_waiters(self) -> None:
        waiters, self.room_waiters = self.room_waiters, None
        for callback in waiters or ():
            callback()

    def write_now(self) -> None:
        """Loop callback (fast path): one write for every frame queued this turn."""
        self.write_soon = False
        direct, try_write = self.direct, self._try_write
        assert direct is not None and try_write is not None
        conn = self.conn
        pending = conn.pending_output
        if self.writing or pending > LARGE_WRITE:
            self._wake_writer()  # a write in progress, or a large one: the writer task
            return
        if pending:
            data = conn.data_to_send()
            if not try_write(data):
                # congested or closing: the writer task sees it through, these bytes first
                conn.unsend(data)
                self._wake_writer()
                return
            self.writes += 1
        elif not direct.can_write_nowait():
            self._wake_writer()  # closing: the writer tells whoever waits for this batch
            return
        batch, self._batch = self._batch, None
        if batch is not None:
            batch.finish()
        # _made_room, inline: this runs once per write
        admission = self.admission
        if admission is not None and (admission.paused or admission._backlog):
            admission.make_room()
        if self.room_waiters is not None:
            self._room_for_waiters()  # everything queued was just written

    def write_at_once(self) -> None:
        """Write what is queued now if the stream can (fast path), else as ``kick`` does.

        Everything queued so far leaves in this write, in order; a write
        callback already scheduled then finds nothing left to send.
        """
        if self.direct is not None and not self.writing:
            self.write_now()
        else:
            self.kick()

    def write_early(self) -> None:
        """A sender queued past ``WRITE_AT`` without yielding: hand it to the transport now.

        Only if the transport takes it at once (the fast path, no write in
        progress, not failing, not over its high water): never into a
        congested transport, which would hand the bytes back (a copy of all
        that is queued) on every send, nor into one that failed this turn,
        which asyncio tells a turn later, logging every write meanwhile.
        The rest of :meth:`write_now` (the batch's waiters, room for calls
        held back) is left to the loop's next turn, as :meth:`kick` arranges:
        not run inside the sender's ``send``.
        """
        direct = self.direct
        if (
            direct is not None
            and not self.writing
            and self.conn.pending_output <= LARGE_WRITE
            and direct.can_write_nowait()
            and not direct.closing()
        ):
            direct.write_nowait(self.conn.data_to_send())
            self.writes += 1
        if not self.write_soon:
            self.kick()

    def flush_later(self) -> None:
        """Have what is queued sent, without waiting for it (plain callers)."""
        if self.conn.state is OPEN:
            self.kick()

    async def flush(self) -> None:
        """Return once everything queued so far has been handed to the transport.

        Raises:
            ConnectionClosedError: the link is gone, or the peer stopped reading
                for ``send_timeout`` seconds.
        """
        self.kick()
        batch = self.next_batch()
        await batch.done.wait()
        if batch.failed:
            raise self._closed_error()

    async def flush_quietly(self) -> None:
        with suppress(ConnectionClosedError):
            await self.flush()

    def _made_room(self) -> None:
        admission = self.admission
        # make_room has nothing to do unless calls are held back or reading paused.
        if admission is not None and (admission.paused or admission._backlog):
            admission.make_room()
        if self.room_waiters is not None and self.conn.pending_output <= MAX_PENDING_OUTPUT:
            self._room_for_waiters()

    def _closed_error(self) -> ConnectionClosedError:
        endpoint = self._endpoint
        return ConnectionClosedError(f"connection to {endpoint.name} is closed ({endpoint.reason})")
