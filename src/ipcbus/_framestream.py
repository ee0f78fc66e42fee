"""The contract for transports whose every message is one whole frame (WebSocket, NATS).

A byte stream (a socket) carries length-prefixed frames that the core cuts
apart itself. A WebSocket message or a NATS message already is one frame: such
a transport subclasses :class:`FrameStream`, moves bodies without the 4-byte
length prefix, and the endpoint feeds each one to ``Connection.receive_frame``,
through the same size limit, decoder and state machine as a socket's frames
(docs/protocol.md, "Transports that carry whole frames"). No second parser and
no re-framing: on the way out, the core's blob of frames is sliced into its
bodies (:func:`ipcbus._framing.split_frames`) and each goes out as one message.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import anyio.abc

from ._framing import split_frames

__all__ = ("FrameStream", "frame_limit")


class FrameStream(anyio.abc.ByteStream):
    """A transport of whole frame bodies, usable wherever the endpoint takes a stream.

    Subclasses implement :meth:`receive_frame`, :meth:`send_frame`,
    :meth:`aclose` and :meth:`send_eof`, raising anyio's ``EndOfStream`` when
    the peer has closed and ``BrokenResourceError`` / ``ClosedResourceError``
    as an anyio stream would. A subclass that knows its peer's process (it
    rarely does) may say so; otherwise ``WebContents.process_id`` is 0.

    Attributes:
        max_frame_size: the largest body one message of this transport can
            carry (``None``: no limit of its own). Each side announces at most
            this in its handshake, so a larger value fails at its caller with
            ``FrameTooLargeError``, as over a socket.
        limit_advice: what such a caller should do instead (the error's last
            words); ``None``: raise ``max_frame_size`` on the receiving side.
        heartbeat_auto: the heartbeat interval that ``heartbeat_interval="auto"``
            means here; ``None`` if the transport reports its peer's end as a
            socket does (NATS never does: it needs heartbeats).
        lost_reason: why the link broke, if the transport knows (say, messages
            were lost); the connection's end reports it.
        on_lost: set by the endpoint that reads the stream: a transport that
            finds its link broken calls it with ``lost_reason``, so the
            connection ends even while its reader is paused (backpressure).
    """

    max_frame_size: int | None = None
    limit_advice: str | None = None
    heartbeat_auto: float | None = None
    lost_reason: str | None = None
    on_lost: Callable[[str], None] | None = None

    @abc.abstractmethod
    async def receive_frame(self) -> bytes:
        """The next whole frame body from the peer."""

    @abc.abstractmethod
    async def send_frame(self, body: memoryview) -> None:
        """Send one frame body as one message."""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """One whole frame body (``max_bytes`` does not apply: a frame is never cut)."""
        return await self.receive_frame()

    async def send(self, item: bytes) -> None:
        """Send a run of length-prefixed frames, as the core writes them, one message each."""
        bodies = split_frames(item)
        try:
            for body in bodies:
                await self.send_frame(body)
        finally:
            for body in bodies:  # views of the caller's buffer: let it grow again
                body.release()


def frame_limit(configured: int, stream: anyio.abc.ByteStream) -> int:
    """The frame size limit to announce: ours, or the transport's if that is smaller."""
    own = stream.max_frame_size if isinstance(stream, FrameStream) else None
    return configured if own is None else min(configured, own)
