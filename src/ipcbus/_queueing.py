"""What senders call on one connection's write side: queue a frame, have it sent, or wait.

A base class of ``_outbox.Outbox``, so ``send`` stays one object's methods.
``IpcRenderer.send`` and ``WebContents.send`` queue a message here
(``queue_message``) and await ``Outbox.flush`` only when told to: more than
``SEND_HIGH_WATER`` bytes wait to be written (backpressure).
``post_message`` checks what can fail before any port is claimed. How what
is queued leaves (one write per loop turn, or the writer task) is
``_outbox``'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ._errors import FrameTooLargeError
from ._protocol import OPEN
from ._values import ENCODE_ERRORS, encode_error, too_large
from ._wire import PortRef

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._protocol import Connection

__all__ = ("SEND_HIGH_WATER", "Queueing")

SEND_HIGH_WATER = 256 * 1024  # queued bytes beyond which send() waits for the writer
#: Queued bytes beyond which a send writes them at once rather than on the
#: loop's next turn: a sender that never yields (a loop of sends) would
#: otherwise hold everything until SEND_HIGH_WATER, and the peer sit idle.
WRITE_AT = 64 * 1024


class Queueing:
    """Queues the frames senders make and says when they must wait for the writer."""

    __slots__ = ()

    if TYPE_CHECKING:  # set by Outbox.__init__
        _endpoint: Endpoint
        conn: Connection
        write_soon: bool

        def kick(self) -> None: ...
        def write_early(self) -> None: ...
        async def flush(self) -> None: ...

    # ---- queueing frames -----------------------------------------------

    def queue_message(self, channel: str, args: tuple[Any, ...]) -> bool:
        """Queue a fire-and-forget message and have it sent.

        Returns ``True`` if the caller must then ``await flush()``: more than
        ``SEND_HIGH_WATER`` bytes wait to be written (backpressure). Not a
        coroutine itself, so ``send`` costs one coroutine, not two.
        """
        conn = self.conn
        if conn.state is not OPEN:
            self._endpoint.require_open()
        try:
            pending = conn.send_message(channel, args)
        except ENCODE_ERRORS as exc:
            raise encode_error("send", channel, args, exc) from None
        except FrameTooLargeError as exc:
            raise too_large("send", channel, exc, self._endpoint.limit_advice) from None
        if pending > SEND_HIGH_WATER:  # self.congested, inline
            return True
        if pending > WRITE_AT:
            self.write_early()
        elif not self.write_soon:  # else a write already comes on the loop's next turn
            self.kick()
        return False

    async def post_message(
        self,
        channel: str,
        message: Any,
        ports: int,
        send_out: Callable[[], tuple[list[PortRef], Callable[[], None]]],
    ) -> None:
        """Send ``message`` with ``ports`` port ends.

        What can fail is checked before any port is claimed (claiming
        neuters it): a value that cannot be encoded, a frame that could be
        over the peer's limit. Then ``send_out()`` gives the port refs and
        what to run once the frame is queued.
        """
        self._endpoint.require_open()
        args = (message,)
        try:
            raw = msgspec.Raw(msgspec.msgpack.encode(args))
            self.conn.check_message(channel, raw, ports)
        except ENCODE_ERRORS as exc:
            raise encode_error("post_message", channel, args, exc) from None
        except FrameTooLargeError as exc:
            raise too_large("post_message", channel, exc, self._endpoint.limit_advice) from None
        refs, after = send_out()
        self.conn.send_message(channel, raw, refs)
        after()
        await self.queued()

    async def queued(self) -> None:
        """After queueing a fire-and-forget frame: send it, and apply backpressure.

        Returns at once unless more than ``SEND_HIGH_WATER`` bytes wait to be
        written; then it waits until the writer has handed them over.
        """
        if self.conn.pending_output > SEND_HIGH_WATER:  # self.congested, inline
            await self.flush()
        else:
            self.kick()

    @property
    def congested(self) -> bool:
        """Whether a sender should wait for the writer (``queued``'s rule)."""
        return self.conn.pending_output > SEND_HIGH_WATER
