"""What a transport may offer an endpoint beyond a byte stream: typing Protocols.

An endpoint needs of its stream only anyio's ``ByteStream``: ``receive``,
``send`` and ``aclose``. A transport may offer more, and the endpoint uses
what it finds (``hasattr`` once, when the connection starts; no
``isinstance`` against these, which is slow and not needed):

* :class:`ReceivesInto`: read straight into the core's frame buffer (large
  frames land without a copy).
* :class:`WritesNow`: write without a task switch, from a loop callback, and
  say how many bytes the transport still holds (the send-timeout watchdog).
* :class:`MakesWaiters`: a cheaper waiter for a call's one reply.
* :class:`DeliversReads`: hand each read to a :class:`Reader` as it arrives,
  from the loop's callback, so a connection needs no task of its own to read
  (main's connections; issue 12).
* :class:`HasTimers`: call back later from the loop, so a renderer's
  liveness looks need no task of their own either (``_liveness.TimedLooks``).

The asyncio fast path (``_aio.AsyncioSocketStream``) offers all five; a new
transport (WebSocket, NATS) may offer none and works the same, a little slower.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Protocol

__all__ = (
    "Cancellable",
    "DeliversReads",
    "HasTimers",
    "MakesWaiters",
    "Reader",
    "ReceivesInto",
    "ReplyWaiter",
    "WritesNow",
)


class ReplyWaiter(Protocol):
    """What one call waits on for its one reply: the fast path's bare ``asyncio.Future``,
    or ``_calls.EventWaiter`` (over ``anyio.Event``) for any other transport.

    Awaiting it gives what ``set_result`` was given. A future is cancelled
    with the task that awaits it; it then takes no result.
    """

    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def result(self) -> Any: ...
    def __await__(self) -> Generator[Any, None, Any]: ...


class ReceivesInto(Protocol):
    """A stream that reads into a buffer the caller lends."""

    async def receive_into(self, buffer: memoryview) -> int:
        """Fill the start of ``buffer``; return how many bytes came (never 0)."""
        ...


class WritesNow(Protocol):
    """A stream that can be written from a loop callback, without awaiting."""

    def can_write_nowait(self) -> bool:
        """Whether :meth:`write_nowait` may be called now (open, not congested)."""
        ...

    def closing(self) -> bool:
        """Whether the transport failed on this loop turn or was closed (known at once,
        where :meth:`can_write_nowait` may learn of a failure a turn later)."""
        ...

    def write_nowait(self, data: bytes | bytearray) -> None:
        """Hand ``data`` to the transport now (at most ``_aio.LARGE_WRITE`` bytes)."""
        ...

    def try_write(self, data: bytes | bytearray) -> bool:
        """:meth:`write_nowait` if :meth:`can_write_nowait`, in one call; whether it wrote."""
        ...

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the event loop's next turn."""
        ...

    def unsent(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet."""
        ...


class Cancellable(Protocol):
    """What :meth:`HasTimers.call_later` returns: a timer that can be called off."""

    def cancel(self) -> None: ...


class HasTimers(Protocol):
    """A stream whose event loop can call back later without a task (the asyncio fast path)."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        """Run ``callback`` on the loop in ``delay`` seconds, unless cancelled first."""
        ...

    def time(self) -> float:
        """The loop's clock (``anyio.current_time()`` there)."""
        ...


class MakesWaiters(Protocol):
    """A stream that makes reply waiters cheaper than ``anyio.Event``: futures."""

    new_waiter: Callable[[], ReplyWaiter]


class Reader(Protocol):
    """What a :class:`DeliversReads` stream hands its reads to (an endpoint)."""

    def receive_window(self) -> memoryview | None:
        """Where the next read may go straight in (a large frame's body), or ``None``."""
        ...

    def received(self, data: bytes) -> bool:
        """``data`` was read (a copy: it may be kept).

        Returns whether the next read may go into :meth:`receive_window`
        (part of a frame is held); while it is ``False`` the stream need not ask.
        """
        ...

    def received_into(self, nbytes: int) -> bool:
        """``nbytes`` were read into the last window :meth:`receive_window` gave.

        Returns what :meth:`received` returns.
        """
        ...

    def read_ended(self) -> None:
        """The peer closed its side, or the link failed: nothing more will come."""
        ...


class DeliversReads(Protocol):
    """A stream that calls a :class:`Reader` from the loop as data arrives."""

    def deliver_to(self, reader: Reader) -> None:
        """From now on, hand every read to ``reader`` (what was buffered first)."""
        ...

    def pause_reading(self) -> None:
        """Read nothing more from the peer until :meth:`resume_reading`."""
        ...

    def resume_reading(self) -> None: ...
