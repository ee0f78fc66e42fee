"""The records main's port router keeps: connections (``Sink``, ``Budget``) and ends (``End``).

``_portroute`` holds the table and its rules (delivery in ``_routedelivery``,
its base class); these are its records, with the little both routers share
(``After``, ``nothing``, ``dropped``).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

import msgspec

from ._endpoint import Endpoint
from ._errors import FrameTooLargeError
from ._portparts import CLOSE, Item, PortHost, Queued, Relayed
from ._protocol import Connection, State
from ._values import too_large
from ._wire import CloseCode, PortRef
from .ports import MessagePortMain, close_ports_in, living

#: Bytes of one renderer's port messages that may wait in the inboxes of ends
#: main holds before its connection stops being read (``Parking``): as
#: for its output (``_outbox.MAX_PENDING_OUTPUT``), main grows by what the
#: renderer sends only up to a bound, then the renderer waits.
MAX_PARKED = 4 * 1024 * 1024

__all__ = (
    "MAX_PARKED",
    "After",
    "Budget",
    "End",
    "Parking",
    "Sink",
    "closed_port",
    "dropped",
    "nothing",
)

logger = logging.getLogger("ipcbus")

After = Callable[[], None]


def nothing() -> None:
    """An ``After`` with nothing to do."""


def dropped(where: str, item: Item, exc: FrameTooLargeError) -> None:
    """A port message relayed for someone else that is over its next peer's limit."""
    logger.warning("dropped a port message %s: %s", where, exc)
    close_ports_in([item])


class Budget:
    """How many ends of channels one renderer made are in main's table.

    Apart from the ``Sink``: an end that outlives its connection must not
    keep the connection's objects alive.
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Parking:
    """One renderer's port messages waiting in the inboxes of ends main holds.

    Not started, or read slowly: past ``MAX_PARKED`` bytes its reading pauses
    (``Admission.relay_blocked``) until main's code takes some. Apart from
    its ``Sink`` so that messages left there keep no connection alive.
    """

    __slots__ = ("parked", "room_waiters")

    def __init__(self) -> None:
        self.parked = 0  # bytes
        #: Called once ``parked`` is back under ``MAX_PARKED`` (``when_room``).
        self.room_waiters: list[Callable[[], None]] | None = None

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the parked bytes are under ``MAX_PARKED``."""
        if self.parked <= MAX_PARKED:
            callback()
            return
        if self.room_waiters is None:
            self.room_waiters = []
        self.room_waiters.append(callback)

    def unpark(self, size: int) -> None:
        """``size`` bytes parked in main were taken (or dropped): maybe read on."""
        self.parked -= size
        if self.room_waiters is not None and self.parked <= MAX_PARKED:
            self.release()

    def release(self) -> None:
        """Call whoever waits for room (under the bound, or the connection ended)."""
        waiters, self.room_waiters = self.room_waiters, None
        for callback in waiters or ():
            callback()


class Sink:
    """One renderer connection, as main's router sees it."""

    __slots__ = (
        "acks",
        "budget",
        "dead",
        "endpoint",
        "holding",
        "parking",
        "promised",
        "refused",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.dead = False  # set once main has handled the connection's end
        #: Ends of channels this renderer made that are in main's table
        #: (``max_open_ports`` bounds them: each costs main kilobytes).
        self.budget = Budget()
        #: Ends closed while here that wait for its acknowledgement (at most
        #: ``_routedelivery.MAX_UNANSWERED``: ``RouteDelivery._await_ack``).
        self.acks = Budget()
        self.refused = False  # over max_open_ports, or lied about a port: ending
        #: Frames it said it gives back right after the ports it sent (``returning``).
        self.promised = 0
        #: Frames main holds for ends it owes frames back for, all ends together
        #: (``MAX_HELD``): per connection, not per end, so many ends cannot add up.
        self.holding = 0
        #: Its port messages waiting in ports main holds (``MAX_PARKED``).
        self.parking = Parking()

    def gave_back(self) -> None:
        """A frame given back came: one fewer promised (frames main sent after a
        move come back the same way, so the count stops at 0)."""
        self.promised = max(0, self.promised - 1)

    def refuse(self, reason: str) -> None:
        """End this renderer's connection over what it sent (``Goodbye`` saying why).

        From a task of its own: this runs inside the dispatch of its frame.
        """
        if not self.refused:
            self.refused = True
            self.endpoint.start_soon(self.endpoint.close, CloseCode.PROTOCOL_ERROR, reason)

    def _conn(self) -> Connection | None:
        conn = self.endpoint.conn
        return conn if not self.dead and conn.state is State.OPEN else None

    def check(self, wire: int, data: msgspec.Raw, ports: int) -> None:
        """Raise now if a message for ``wire`` with ``ports`` ends could be over the
        renderer's limit: before the ports are claimed.

        Raises:
            FrameTooLargeError: saying so, for the poster.
        """
        if (conn := self._conn()) is not None:
            try:
                conn.check_port_message(wire, data, ports)
            except FrameTooLargeError as exc:
                raise too_large("post_message", None, exc) from None

    def message(self, wire: int, data: msgspec.Raw, refs: list[PortRef]) -> None:
        """Queue a port message for ``wire``.

        Raises:
            FrameTooLargeError: over the renderer's limit; nothing was queued.
        """
        if (conn := self._conn()) is not None:
            conn.send_port_message(wire, data, refs)
            self.endpoint.outbox.flush_later()

    def close(self, wire: int) -> None:
        if (conn := self._conn()) is not None:
            conn.send_port_close(wire)
            self.endpoint.outbox.flush_later()


class End:
    """One port end known to main."""

    __slots__ = (
        "charged",
        "held",
        "id",
        "origin",
        "owed",
        "parked",
        "peer",
        "port",
        "returned",
        "sent",
        "sink",
        "wire",
    )

    def __init__(self, id: int, peer: int) -> None:
        self.id = id
        self.peer = peer  # the other end's id; 0 once the channel is closed
        self.sink: Sink | None = None  # None: in main, as ``port``
        self.wire = 0  # id on ``sink``'s connection
        # Weak: an end in main that nobody refers to and that is not started
        # (then it is pinned) is collected, and closes (``MainPortRouter.collected``).
        self.port: weakref.ref[MessagePortMain] | None = None
        self.sent = 0  # frames sent to ``sink`` for this end since it went there
        self.owed: dict[Sink, int] = {}  # frames a former holder still gives back
        # Lists, not deques: empty nearly always (they fill only while an end
        # moves), and an empty deque is 760 bytes to a list's 56.
        self.returned: list[Queued] = []  # given back while the end is away
        self.held: list[Queued] = []  # new traffic waiting for ``owed``
        #: How many of ``held`` each owing renderer was charged (``Sink.holding``).
        self.charged: dict[Sink, int] | None = None
        #: What it counts against: the budget of the renderer that made it, until
        #: main's code moves it on; once closed at a renderer, that one's ``acks``.
        self.origin: Budget | None = None
        #: Bytes parked in its port in main, by the renderer they came from
        #: (``Relayed``): given back as they are taken, or all when it goes.
        self.parked: dict[Parking, int] | None = None

    def park(self, item: Relayed) -> None:
        """``item`` waits in this end's inbox in main: count it against its sender."""
        parking = item.source
        size = len(item.data)
        item.parked = True
        parking.parked += size
        parked = self.parked
        if parked is None:
            parked = self.parked = {}
        parked[parking] = parked.get(parking, 0) + size

    def took(self, item: Relayed) -> None:
        """A parked ``item`` left this end's inbox."""
        if not item.parked:
            return
        item.parked = False
        parked, parking, size = self.parked, item.source, len(item.data)
        if parked is None or parking not in parked:
            return  # given back already (``unpark_all``)
        left = parked[parking] - size
        if left > 0:
            parked[parking] = left
        else:
            del parked[parking]
        parking.unpark(size)

    def unpark_all(self) -> None:
        """What waits in the inbox no longer counts: it left main, or was dropped."""
        parked, self.parked = self.parked, None
        for parking, size in (parked or {}).items():
            parking.unpark(size)

    def holder(self) -> MessagePortMain | None:
        """The object holding this end in main; ``None`` if it is elsewhere or was collected."""
        return living(self.port)

    def uncharge(self) -> None:
        """Stop counting against the budget of the renderer that made it."""
        if self.origin is not None:
            self.origin.count -= 1
            self.origin = None


def closed_port(host: PortHost) -> MessagePortMain:
    port = MessagePortMain()
    port._host = host
    port._closed = True
    port._queue(CLOSE)
    return port
