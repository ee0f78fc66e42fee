"""What runs and what waits on one connection: ``max_in_flight``, the backlog, pausing.

The admission half of the ``Dispatcher`` (``_dispatch``), a base class
because the reader's hot loop reads both per frame. Rules:

* At most ``max_in_flight`` async callbacks run at once (``schedule``
  counts them in ``active``). While full, calls wait in order in the
  backlog (``_hold``) and start as handlers finish (``make_room``).
* While full, reading goes on a little (``must_pause``): until the backlog
  holds ``BACKLOG_LIMIT`` calls or ``READ_AHEAD_BYTES`` of their channels and
  arguments (``held_size``), and only then pauses, so a flooding peer fills
  its own socket buffer rather than our memory. A little, because what comes next may be the
  peer's Cancel of a running handler (its call timed out): unread, a handler
  that ends only when cancelled would hold its slot, and the connection,
  for good. A Cancel of a call still held back drops it (``drop_held``).
  While we await the peer's replies, only ``BACKLOG_LIMIT`` counts: the
  running handlers may be the very ones waiting for them (replies are
  handled at once), and a reply behind more bytes than any bound would
  otherwise never be read. More than
  ``MAX_PENDING_OUTPUT`` unsent bytes count as full too, so replies made
  inline cannot pile up behind a peer that reads slowly. In main only
  (``output_bound``): a renderer reads on whatever it has still to send,
  since it trusts main, and two peers that each stopped reading while
  their own output waited would wait for each other for ever (two renderers
  posting to each other through main did, until ``send_timeout``).
* Reading pauses too while a port message this connection sent waits in
  another renderer's unsent output past ``MAX_PENDING_OUTPUT``
  (``relay_blocked``): main relays port messages between renderers, and the
  one that reads slowly must slow the one that posts, not grow main. The
  same while its port messages wait in the inboxes of ports main holds
  (not started, or read slowly) past ``_portends.MAX_PARKED``. While main
  awaits this peer's replies (a port listener that invokes the poster), up
  to ``RELAY_HARD`` times these bounds: the reply comes after what it posted.
* A paused peer that hangs up is read to its end (``peer_hung_up``, from the
  liveness sweep): it can send no more, and main must learn that it left.
* A stream waiting for credit gives its slot back (``lend_slot``), so
  ``max_in_flight`` does not bound streams: at most ``MAX_OPEN_STREAMS``
  are served at once per connection, and one more is refused with an error
  reply. (Unbounded, a peer that asked for streams and granted no credit
  held a task and a generator per request: 1.4 GiB of main for 3.7 MiB
  sent.)
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._calls import Calls
from ._events import MessageReceived, RequestReceived
from ._outbox import MAX_PENDING_OUTPUT, Outbox
from ._protocol import Connection, Role

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._owner import Owner


__all__ = ("Admission", "check_max_in_flight", "held_size")

logger = logging.getLogger("ipcbus")

BACKLOG_LIMIT = 1024  # calls read ahead while full
#: Bytes (channels and arguments) of the calls read ahead while full, unless we
#: await the peer's replies (then only ``BACKLOG_LIMIT`` bounds them).
READ_AHEAD_BYTES = 1024 * 1024
SOFT, HARD = 1, 2  # ``relay_wait``: past a relay bound; past RELAY_HARD times it
#: While main awaits a peer's replies, its port messages may go on to this many
#: times the bounds (``MAX_PENDING_OUTPUT``, ``MAX_PARKED``) before it pauses.
RELAY_HARD = 4
MAX_OPEN_STREAMS = 256  # streams served at once on one connection; one more is refused


def held_size(event: MessageReceived | RequestReceived) -> int:
    """What a call held back costs against ``READ_AHEAD_BYTES``: its channel's and
    arguments' bytes (either may be most of a frame)."""
    return len(event.channel) + len(event.args)


class HasRoom(Protocol):
    """Where a port message went that may be full (``relay_blocked``)."""

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once there is room again (at once if there is)."""


def check_max_in_flight(n: int) -> None:
    """Refuse a ``max_in_flight`` with which no async handler could ever run.

    Raises:
        ValueError: ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"max_in_flight must be >= 1, not {n}")


class Admission:
    """Counts what runs, holds back what must wait, and says when to stop reading."""

    __slots__ = (
        "_backlog",
        "_held",
        "_held_calls",
        "_held_count",
        "_landed",
        "_max_in_flight",
        "_owner",
        "_room",
        "active",
        "calls",
        "conn",
        "endpoint",
        "idle",
        "new_event",
        "outbox",
        "output_bound",
        "paused",
        "peer_left",
        "pending_starts",
        "relay_wait",
        "resume_reading",
        "scopes",
        "stopping",
        "streams",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        conn: Connection,
        owner: Owner,
        outbox: Outbox,
        calls: Calls,
        *,
        new_event: Callable[[], anyio.Event],
        max_in_flight: int,
    ) -> None:
        self.endpoint = endpoint
        self.conn = conn
        self._owner = owner
        self.outbox = outbox
        self.calls = calls
        self.new_event = new_event
        self.pending_starts = 0  # async dispatch tasks scheduled, not yet started
        self.active = 0  # async dispatch tasks not yet finished
        self._max_in_flight = max_in_flight
        self._backlog: deque[MessageReceived | RequestReceived] = deque()  # held back while full
        self._held = 0  # their channels' and arguments' bytes
        self._held_count = 0  # and how many, less those cancelled meanwhile
        self._held_calls: dict[int, RequestReceived] = {}  # the held calls, by request id
        self._room: anyio.Event | None = None  # set when a paused reader may read on
        self.paused = False  # reading is paused by backpressure
        #: Called when a reader paused by the stream (not waiting) may read on.
        self.resume_reading: Callable[[], None] | None = None
        self._landed: dict[int, list[Any]] = {}  # ports of held-back messages, by id(event)
        # handlers running in their own cancel scope, by request id (``_calling``)
        self.scopes: dict[int, anyio.CancelScope] = {}
        #: Set when the last handler, or the last async dispatch task, finishes.
        self.idle: anyio.Event | None = None
        #: Main is shutting down and cancelled the handlers: one that starts now
        #: (from the backlog, or a call read meanwhile) is cancelled as it starts.
        self.stopping = False
        self.streams = 0  # streams being served (``_calling.serve_stream``)
        #: Unsent bytes past which this side holds calls back and stops reading:
        #: main's rule only (see the module's docstring).
        self.output_bound: float = MAX_PENDING_OUTPUT if conn.role is Role.MAIN else math.inf
        #: Port messages from here wait where there is no room (``relay_blocked``):
        #: 0 no, ``SOFT`` past the bound, ``HARD`` past ``RELAY_HARD`` times it.
        self.relay_wait = 0
        #: The paused peer hung up (``_liveness``): read what is left, and its end.
        self.peer_left = False

    if TYPE_CHECKING:

        def admit(self, event: MessageReceived | RequestReceived) -> None: ...

    def _full(self) -> bool:
        # Full too while much output is unsent, so replies made inline cannot
        # pile up behind a peer that reads slowly.
        return self.active >= self._max_in_flight or self.conn.pending_output > self.output_bound

    def must_pause(self) -> bool:
        """Whether the reader must stop reading until there is room."""
        # _full, inline: this runs after every read. While we await the peer's
        # replies, they may be behind what it sent: read on, to a point.
        if self.peer_left:
            return False  # nothing more can come than what is left to read
        return (
            (self.active >= self._max_in_flight or self.conn.pending_output > self.output_bound)
            and (
                self._held_count >= BACKLOG_LIMIT
                or (self._held >= READ_AHEAD_BYTES and not self.calls.waiters)
            )
        ) or (self.relay_wait > SOFT or (self.relay_wait == SOFT and not self.calls.waiters))

    def relay_blocked(self, full: HasRoom, *, hard: bool) -> None:
        """A port message from here went where there is no more room: to a
        renderer's ``Outbox`` over ``MAX_PENDING_OUTPUT``, or into ports main
        holds past ``MAX_PARKED`` of this renderer's bytes (its ``Parking``).
        Read no more until ``full`` says there is room again (or it ended);
        while we await this peer's replies, only once ``hard`` (past
        ``RELAY_HARD`` times the bound): a handler or port listener may be
        awaiting a reply that comes after what was posted."""
        level = HARD if hard else SOFT
        if self.relay_wait < level:
            first = not self.relay_wait
            self.relay_wait = level
            if first:
                full.when_room(self._relay_room)

    def _relay_room(self) -> None:
        self.relay_wait = 0
        self.make_room()

    def peer_hung_up(self) -> None:
        """The peer, whose reading is paused, has hung up: read to its end now.

        What it left is bounded (it can send no more), and until it is read
        nobody learns that it is gone: a renderer paused because main's code
        does not read a port would otherwise stay for as long as that lasts.
        """
        if not self.peer_left:
            self.peer_left = True
            self.make_room()

    def _hold(self, event: MessageReceived | RequestReceived) -> None:
        """Keep a call for later, in order, while too many are in flight."""
        if type(event) is MessageReceived and event.ports:
            # Land its ports now: the frames that follow may name them.
            self._landed[id(event)] = self._owner.receive_ports(event.ports)
        self._backlog.append(event)
        self._held += held_size(event)
        self._held_count += 1
        if type(event) is RequestReceived:
            self._held_calls[event.request_id] = event

    def drop_held(self, request_id: int) -> None:
        """The peer cancelled call ``request_id``: if it is held back, it never starts.

        (The core has acknowledged the Cancel: the caller needs no other reply.)
        It stays in the backlog, skipped when its turn comes: no search, so a
        peer that cancels every call it holds back costs a dict lookup each.
        """
        event = self._held_calls.pop(request_id, None)
        if event is None:
            return
        self._held -= held_size(event)
        self._held_count -= 1
        backlog = self._backlog
        if len(backlog) > 2 * self._held_count + BACKLOG_LIMIT:
            # Mostly cancelled calls: a peer that keeps calling and cancelling
            # while full must not grow it. In place: readers hold the deque.
            held = self._held_calls
            kept = [e for e in backlog if type(e) is not RequestReceived or e.request_id in held]
            backlog.clear()
            backlog.extend(kept)
        self.make_room()  # reading may have paused on it

    async def pause(self) -> None:
        """Stop reading until the calls in flight and the unsent output allow more."""
        while self.must_pause():
            self.outbox.kick()  # replies already made go out first
            self._room = self.new_event()
            self.paused = True
            try:
                await self._room.wait()
            finally:
                self.paused = False

    def make_room(self) -> None:
        """Start held-back calls while there is room; wake a paused reader."""
        backlog = self._backlog
        while backlog and not self._full():
            event = backlog.popleft()
            if type(event) is RequestReceived and (
                self._held_calls.pop(event.request_id, None) is None
            ):
                continue  # cancelled while held (drop_held): counted out already
            self._held -= held_size(event)
            self._held_count -= 1
            self.admit(event)
        if self._room is not None and not self.must_pause():
            self._room.set()
        elif self.paused and self.resume_reading is not None and not self.must_pause():
            self.paused = False
            self.resume_reading()

    def lend_slot(self) -> None:
        """A handler waits for the peer (a stream for credit): not work, give its slot back."""
        self.active -= 1
        self.make_room()

    def take_slot(self) -> None:
        """The handler works again: count it against ``max_in_flight`` again."""
        self.active += 1

    def schedule(self, fn: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run ``fn(*args)`` in a task of its own, counted against ``max_in_flight``."""
        self.pending_starts += 1
        self.active += 1
        self.endpoint.task_group.start_soon(self._tracked, fn, args)

    async def _tracked(self, fn: Callable[..., Coroutine[Any, Any, None]], args: Any) -> None:
        self.pending_starts -= 1
        try:
            await fn(*args)
        except Exception:
            # A bug in ipcbus (user functions' errors are answered in _calling):
            # this connection ends, not the task group it shares with others.
            logger.exception("internal error serving %s", self.endpoint.name)
            self.endpoint.link_lost("internal error (logged)")
        finally:
            self.active -= 1
            self.make_room()
            if self.idle is not None and not self.active:
                self.idle.set()  # ``Endpoint.wait_idle``: listeners count too

    def ended(self) -> None:
        """The connection ended: forget held-back calls, cancel every running handler."""
        self._backlog.clear()  # nobody could receive their replies
        self._held_calls.clear()
        self._held = self._held_count = 0
        for scope in self.scopes.values():
            scope.cancel()
