"""A broadcast: one encoded frame queued on, or written straight to, every renderer.

``IpcMain.broadcast`` encodes the frame once (``prepare_message``) and hands
it here with every renderer's outbox (a list kept until a renderer comes or
goes); per renderer the cost is one call.

The first broadcast of a loop turn goes straight to each renderer's socket
(the asyncio fast path), where nothing is queued before it: one write per
renderer, at once. Broadcasts that follow it in the same turn (a loop of
them, which does not yield) are queued behind it, and each renderer's copies
leave together in one write when the turn ends, as ``send``'s do: a burst
of N broadcasts costs each renderer one write and one read, not N.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._aio import LARGE_WRITE
from ._errors import FrameTooLargeError
from ._framing import HEADER_SIZE
from ._protocol import OPEN
from ._queueing import SEND_HIGH_WATER

if TYPE_CHECKING:
    from ._outbox import Outbox

__all__ = ("Fanout",)

logger = logging.getLogger("ipcbus")
CallSoon = Callable[[Callable[[], object]], object]


class Fanout:
    """Queues one main's broadcasts: at once for the first of a loop turn, then batched."""

    __slots__ = ("_burst", "outboxes")

    def __init__(self) -> None:
        self._burst = False  # a broadcast was written at once this loop turn
        #: Every renderer's outbox, made by the first broadcast after a renderer
        #: came or went (``IpcMain`` sets it to ``None`` then).
        self.outboxes: list[Outbox] | None = None

    def queue(self, outboxes: list[Outbox], frame: bytes) -> list[Outbox]:
        """Queue a prepared frame on every open connection and have it sent.

        Returns the outboxes over ``SEND_HIGH_WATER``, which the caller must
        flush (backpressure). Closed endpoints, and those whose peer's limit
        the frame is over (logged), are skipped.
        """
        if self._burst:
            return _queue_each(outboxes, frame)
        congested, call_soon = _write_each(outboxes, frame)
        if call_soon is not None:
            self._burst = True
            call_soon(self._end_burst)
        return congested

    def _end_burst(self) -> None:
        # Runs on the next loop turn, beside the burst's write callbacks: any
        # broadcast after it (the broadcaster yielded) is the first of its turn.
        self._burst = False


def _write_each(outboxes: list[Outbox], frame: bytes) -> tuple[list[Outbox], CallSoon | None]:
    """The first broadcast of a turn: to every socket at once, where nothing is queued.

    Where nothing is queued before it, the frame goes to the transport as it
    is, without being copied into the core's outbox and out again. Returns
    the congested outboxes, and a fast-path stream's ``call_soon`` if there
    was one (to end the burst on the next turn).
    """
    congested = []
    call_soon: CallSoon | None = None
    size = len(frame) - HEADER_SIZE
    small = len(frame) <= LARGE_WRITE
    for outbox in outboxes:
        conn = outbox.conn
        if conn.state is not OPEN:
            continue
        direct = outbox.direct
        if direct is not None:
            call_soon = direct.call_soon
            limit = conn.peer_max_frame_size
            if (
                small
                and not outbox.writing
                and not conn.pending_output  # nothing queued goes before it: order kept
                and (not limit or size <= limit)  # Connection.send_prepared's check, inline
                and direct.try_write(frame)
            ):
                outbox.writes += 1
                continue
        try:
            conn.send_prepared(frame)
        except FrameTooLargeError as exc:
            logger.warning("broadcast skipped %s: %s", outbox.name, exc)
            continue
        # Write now rather than schedule a callback per connection (a broadcast
        # reaches every renderer at once).
        outbox.write_at_once()
        if conn.pending_output > SEND_HIGH_WATER:  # Outbox.congested, inline
            congested.append(outbox)
    return congested, call_soon


def _queue_each(outboxes: list[Outbox], frame: bytes) -> list[Outbox]:
    """A later broadcast of the turn: queued; each renderer's copies leave in one write.

    The queueing (``send_prepared``, the warning for a renderer whose limit the
    frame is over, the congestion check) is ``_write_each``'s fallback written
    out again, not shared through a function: a broadcast costs main one
    Python call per renderer, and a helper would make it two.
    """
    congested = []
    for outbox in outboxes:
        conn = outbox.conn
        if conn.state is not OPEN:
            continue
        try:
            conn.send_prepared(frame)
        except FrameTooLargeError as exc:
            logger.warning("broadcast skipped %s: %s", outbox.name, exc)
            continue
        if conn.pending_output > SEND_HIGH_WATER:  # Outbox.congested, inline
            congested.append(outbox)  # its flush() has it written
        elif not outbox.write_soon:  # else its write already comes at the turn's end
            outbox.kick()
    return congested
