"""The writer task of one connection's write side, and the last words of its end.

A base class of ``_outbox.Outbox``. Most writes leave from a loop callback
(``Outbox.write_now``, the asyncio fast path); the writer task writes what a
callback cannot: on a transport that cannot write without waiting (TLS, a
WebSocket, NATS, trio), and on the fast path while the transport is
congested, for a large write, or while it closes. It runs in the endpoint's
task group from :meth:`WriterTask.start` until it has caught up (``lazy``)
or the connection ends (``Outbox.stop``). Each pass writes everything queued
by then: one :class:`Batch`, whose waiters (``flush``: backpressure) learn
when it left or failed. When the connection ends, :meth:`WriterTask.last_words`
sends what is left (a Goodbye), unless a write was torn.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._errors import ConnectionClosedError

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._protocol import Connection

__all__ = ("STREAM_ERRORS", "Batch", "WriterTask")

STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)


def _given(coro: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
    return coro


class Batch:
    """Frames that leave in one write; ``done`` is set once they have (or failed).

    The Event is made only when someone waits for it (most frames are sent
    without anyone waiting).
    """

    __slots__ = ("_done", "_finished", "_new_event", "failed")

    def __init__(self, new_event: Callable[[], anyio.Event]) -> None:
        self._new_event = new_event
        self._done: anyio.Event | None = None
        self._finished = False
        self.failed = False

    @property
    def done(self) -> anyio.Event:
        if self._done is None:
            self._done = self._new_event()
            if self._finished:
                self._done.set()
        return self._done

    def finish(self) -> None:
        """The frames have been handed to the transport (or failed)."""
        self._finished = True
        if self._done is not None:
            self._done.set()

    def fail(self) -> None:
        self.failed = True
        self.finish()


class WriterTask:
    """The task that writes what a loop callback cannot, and the end's last words."""

    if not TYPE_CHECKING:  # what these methods keep is in Outbox's slots, which
        __slots__ = ()  # mypy cannot see from here: it checks a base class alone

    if TYPE_CHECKING:  # set by Outbox.__init__
        _endpoint: Endpoint
        conn: Connection
        _stream: anyio.abc.ByteStream
        _new_event: Callable[[], anyio.Event]
        _wake: anyio.Event | None
        _writer_scope: anyio.CancelScope | None
        _writer_coro: Coroutine[Any, Any, None] | None
        _stopped: bool
        _batch: Batch | None
        lazy: bool
        torn: bool
        writing: bool
        writes: int

        def kick(self) -> None: ...
        def next_batch(self) -> Batch: ...
        def _made_room(self) -> None: ...
        def _closed_error(self) -> ConnectionClosedError: ...

    def start(self) -> None:
        """Start the writer task (in the endpoint's task group; from a task)."""
        self._wake = self._new_event()
        # Started from a coroutine we hold: a task cancelled before its first
        # step never awaits it, and ``last_words`` then closes it quietly.
        self._writer_coro = self.writer()
        self._endpoint.task_group.start_soon(_given, self._writer_coro)

    async def writer(self) -> None:
        """Write batches as they are asked for, until the link fails or ``stop``."""
        with anyio.CancelScope() as self._writer_scope:
            if self._stopped:
                self._writer_scope.cancel()
            await self._write_batches()

    async def _write_batches(self) -> None:
        while True:
            assert self._wake is not None
            await self._wake.wait()
            self._wake = self._new_event()
            batch, self._batch = self.next_batch(), None
            data = self.conn.data_to_send()
            try:
                if data:
                    await self._write(data)
            except ConnectionClosedError:
                batch.fail()
                self.next_batch().fail()
                return  # the link is gone; _write has ended the connection
            except BaseException:
                # Cancelled mid-write: whoever waits for these frames, or queued
                # more behind them, must hear so; nothing waits forever.
                batch.fail()
                self.next_batch().fail()
                raise
            del data  # a large frame's buffer must not live on while we wait for the next
            batch.finish()
            self._made_room()
            if self.lazy and not self._wake.is_set():
                self._wake = None  # caught up: the next kick that needs a task starts one
                return

    async def _write(self, data: bytearray) -> None:
        self.writes += 1
        self.writing = True
        try:
            await self._stream.send(data)  # type: ignore[arg-type]
        except STREAM_ERRORS as exc:
            self._endpoint.link_lost(f"sending failed: {exc!r}")
            raise self._closed_error() from exc
        except BaseException:
            # Cancelled mid-write: the peer may hold half a frame.
            self.torn = True
            self._endpoint.link_lost("a write was interrupted")
            raise
        finally:
            self.writing = False

    def settled(self) -> bool:
        """Nothing queued, no write under way, nobody waiting for one: ``drain`` has
        nothing to do (a connection the peer ended, its replies all written)."""
        return not self.conn.pending_output and not self.writing and self._batch is None

    def quiet(self) -> bool:
        """:meth:`settled`, and no writer task: :meth:`last_words` would neither
        wait nor write (the connection can end without a task)."""
        return self._writer_coro is None and self.settled()

    async def drain(self) -> None:
        """Let the writer send what is left (a Goodbye), for at most a second."""
        with anyio.move_on_after(1, shield=True):
            self.kick()
            await self.next_batch().done.wait()

    async def last_words(self) -> None:
        """Fail what still waits, then send what is queued unless the stream is torn."""
        if (coro := self._writer_coro) is not None:
            self._writer_coro = None
            await anyio.lowlevel.checkpoint()  # a writer task scheduled has started now
            if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                coro.close()  # its task was cancelled before it began
        self.next_batch().fail()
        if not self.torn and (data := self.conn.data_to_send()):
            # BusyResourceError: the writer task is still in a write (trio, TLS),
            # and the stream closes under it next: these bytes cannot go out.
            with anyio.move_on_after(1), suppress(*STREAM_ERRORS, anyio.BusyResourceError):
                await self._stream.send(bytes(data))  # e.g. our Goodbye
