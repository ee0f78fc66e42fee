"""A broadcast: one encoded frame queued on, or written straight to, every renderer.

``IpcMain.broadcast`` encodes the frame once (``prepare_message``) and hands
it here with every renderer's endpoint; per renderer the cost is one call,
into its stream, where nothing is queued before the frame.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._aio import LARGE_WRITE
from ._errors import FrameTooLargeError
from ._framing import HEADER_SIZE
from ._protocol import OPEN

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._outbox import Outbox

__all__ = ("queue_prepared",)

logger = logging.getLogger("ipcbus")


def queue_prepared(endpoints: list[Endpoint | None], frame: bytes) -> list[Outbox]:
    """Queue a prepared frame on every open endpoint and have it sent; a broadcast.

    Where nothing is queued before it, the frame goes to the transport as it
    is, without being copied into the core's outbox and out again. Returns
    the outboxes it was queued on instead: only those may be congested (see
    :attr:`Outbox.congested`). Closed endpoints, and those whose peer's limit
    the frame is over (logged), are skipped.
    """
    queued = []
    size = len(frame) - HEADER_SIZE
    small = len(frame) <= LARGE_WRITE
    # One loop for all: the per-renderer cost is one call, into the stream.
    for endpoint in endpoints:
        if endpoint is None:
            continue
        outbox = endpoint.outbox
        conn = outbox.conn
        if conn.state is not OPEN:
            continue
        direct = outbox.direct
        limit = conn.peer_max_frame_size
        if (
            small
            and direct is not None
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
            logger.warning("broadcast skipped %s: %s", endpoint.name, exc)
            continue
        # Write now rather than schedule a callback per connection (a broadcast
        # reaches every renderer at once).
        outbox.write_at_once()
        queued.append(outbox)
    return queued
