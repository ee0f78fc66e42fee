"""Liveness of connections: heartbeats, and writes that never finish.

Timing writes here, rather than wrapping each write in a scope with a
deadline, keeps timers off the hot path: the hot path only bumps counters
(``Endpoint.reads``, ``Outbox.writes``), and :meth:`Liveness.check`, called
every ``tick`` seconds or so by a :class:`Sweeper`, reads them:

* Stalled: the writer's write has not finished, or (fast path) the transport
  holds unsent bytes and that did not shrink, for ``send_timeout`` seconds:
  the peer stopped reading, the link is ended.
* Silent: nothing read for ``heartbeat_timeout`` seconds while a heartbeat is
  configured: the link is ended. Every ``heartbeat_interval`` a Ping goes out.
* Gone while paused: a connection whose reading backpressure paused cannot
  see its peer's end, which waits behind what the peer sent; its socket is
  asked (``hung_up``), and a peer that hung up is read to its end.

One sweeper task serves every connection of an ``IpcMain``: a task per
connection would cost about 34 objects per idle connection for the cycle
collector to walk (issue 12). The sweeper runs only while it has connections
to watch. A renderer has one connection; on the asyncio fast path its looks
come from the loop's timer (:class:`TimedLooks`), elsewhere from a sweeper
of its own.
"""

from __future__ import annotations

import logging
import math
import select
from typing import TYPE_CHECKING, Literal, cast

import anyio
import anyio.abc

from ._framestream import FrameStream
from ._protocol import OPEN

if TYPE_CHECKING:
    from ._capabilities import Cancellable, HasTimers
    from ._endpoint import Endpoint

__all__ = (
    "Liveness",
    "Sweeper",
    "TimedLooks",
    "Watcher",
    "heartbeat_for",
    "hung_up",
    "own_watcher",
)

logger = logging.getLogger("ipcbus")


class Liveness:
    """What one connection's watchdog remembers between two looks."""

    __slots__ = (
        "_endpoint",
        "_interval",
        "_last",
        "_nonce",
        "_seen_reads",
        "_seen_unsent",
        "_seen_writes",
        "_send_timeout",
        "_silence_limit",
        "_silent",
        "_since_ping",
        "_stall_limit",
        "_stalled",
        "tick",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        send_timeout: float | None,
        heartbeat_interval: float | None,
        heartbeat_timeout: float | None,
    ) -> None:
        self._endpoint = endpoint
        self._send_timeout = send_timeout
        self._interval = heartbeat_interval
        self._silence_limit = heartbeat_timeout or (
            3 * heartbeat_interval if heartbeat_interval else math.inf
        )
        self._stall_limit = send_timeout or math.inf
        #: Seconds between two looks.
        self.tick = min(heartbeat_interval or math.inf, self._stall_limit / 4)
        self._seen_reads = self._seen_writes = self._seen_unsent = 0
        self._silent = self._stalled = self._since_ping = 0.0
        self._nonce = 0
        self._last = 0.0  # when we last looked (the loop's clock)

    @property
    def endpoint(self) -> Endpoint:
        """The connection looked at."""
        return self._endpoint

    def start(self, now: float) -> None:
        self._last = now
        self._seen_reads = self._endpoint.reads
        self._seen_writes = self._endpoint.outbox.writes

    def check(self, now: float) -> None:
        """Look at the counters again, ``now`` on the loop's clock; end a dead link."""
        elapsed = now - self._last
        self._last = now
        endpoint = self._endpoint
        if endpoint.termination is not None:
            return  # ending anyway, within a second or two (``Endpoint.run``)
        outbox = endpoint.outbox
        direct = outbox.direct
        unsent = direct.unsent() if direct is not None else 0
        if (outbox.writing and outbox.writes == self._seen_writes) or (
            unsent and unsent >= self._seen_unsent
        ):
            self._stalled += elapsed
        else:
            self._stalled = 0.0
        self._seen_unsent = unsent
        if endpoint.reads != self._seen_reads or endpoint.dispatcher.paused:
            self._silent = 0.0
        else:
            self._silent += elapsed
        self._seen_reads, self._seen_writes = endpoint.reads, outbox.writes
        dispatcher = endpoint.dispatcher
        if dispatcher.paused and not dispatcher.peer_left and hung_up(endpoint.stream):
            dispatcher.peer_hung_up()  # what it left, and its end, are read now
        if self._stalled > self._stall_limit:
            endpoint.link_lost(
                f"{endpoint.name} stopped reading: a write made no progress "
                f"for {self._send_timeout} s"
            )
            endpoint.start_soon(endpoint.stream.aclose)  # wakes the stuck writer
            return
        interval = self._interval
        if endpoint.conn.state is not OPEN or not interval:
            return
        if self._silent > self._silence_limit:
            endpoint.link_lost(f"no data from {endpoint.name} for {self._silent:.1f} s (heartbeat)")
            return
        self._since_ping += elapsed
        if self._since_ping >= interval:
            self._since_ping = 0.0
            self._nonce += 1
            endpoint.conn.send_ping(self._nonce)
            outbox.kick()


class Sweeper:
    """One task that looks at every watched connection's :class:`Liveness` in turn."""

    __slots__ = ("_running", "_task_group", "_tick", "_wake", "_watched")

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group  # where the sweeping task runs
        self._watched: set[Liveness] = set()
        self._tick = math.inf  # the shortest tick of those watched
        self._running = False
        # Set to look again at once. An Event, not a cancelled scope: a scope
        # cancelled from a task costs a formatted account of that task
        # (anyio's reason), once per connection that ends.
        self._wake: anyio.Event | None = None

    def watch(self, liveness: Liveness) -> None:
        """Start looking at ``liveness`` (its connection is up)."""
        liveness.start(anyio.current_time())
        self._watched.add(liveness)
        if liveness.tick < self._tick:
            self._tick = liveness.tick
            self._rouse()  # sleep the shorter tick from now on
        if not self._running:
            self._running = True
            self._task_group.start_soon(self._sweep)

    def forget(self, liveness: Liveness) -> None:
        """Stop looking at ``liveness`` (its connection ended)."""
        self._watched.discard(liveness)
        if not self._watched:
            self._tick = math.inf
            self._rouse()  # nothing left to watch: the task ends now

    def _rouse(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _sweep(self) -> None:
        try:
            while self._watched:
                self._wake = wake = anyio.Event()
                with anyio.move_on_after(self._tick):
                    await wake.wait()
                self._wake = None
                now = anyio.current_time()
                for liveness in list(self._watched):
                    liveness.check(now)
        finally:
            self._running = False
            self._wake = None


class TimedLooks:
    """One connection's looks at its :class:`Liveness`, from the loop's timer: no task.

    For a renderer on the asyncio fast path (``_capabilities.HasTimers``),
    where a :class:`Sweeper` would serve its one connection with a task of its
    own: about 40 objects for the cycle collector per connection, which a
    process holding many renderers (scenario E's clients) walks in every
    collection, and a task to end when the renderer leaves. A timer handle
    is one object. Same interface as :class:`Sweeper`.
    """

    __slots__ = ("_handle", "_liveness", "_timers")

    def __init__(self, timers: HasTimers) -> None:
        self._timers = timers
        self._liveness: Liveness | None = None
        self._handle: Cancellable | None = None

    def watch(self, liveness: Liveness) -> None:
        """Start looking at ``liveness`` every ``liveness.tick`` seconds."""
        liveness.start(self._timers.time())
        self._liveness = liveness
        if liveness.tick < math.inf:
            self._handle = self._timers.call_later(liveness.tick, self._look)

    def forget(self, liveness: Liveness) -> None:
        """Stop looking (the connection ended)."""
        self._liveness = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _look(self) -> None:
        liveness = self._liveness
        self._handle = None
        if liveness is None:
            return
        try:
            liveness.check(self._timers.time())
        except Exception:
            # A bug in ipcbus, in a loop callback nobody awaits: this
            # connection ends (logged), as one in a Sweeper's task would.
            endpoint = liveness.endpoint
            logger.exception("internal error watching %s", endpoint.name)
            endpoint.link_lost("internal error (logged)")
            return
        if self._liveness is liveness:  # not forgotten in the look (a link lost)
            self._handle = self._timers.call_later(liveness.tick, self._look)


#: What looks at a connection's liveness: main's one sweeper, or a renderer's own.
Watcher = Sweeper | TimedLooks


def own_watcher(task_group: anyio.abc.TaskGroup, stream: object) -> Watcher:
    """What watches a connection that no shared :class:`Sweeper` does (a renderer's):
    the loop's timer where the stream offers one, else a sweeper task of its own."""
    if hasattr(stream, "call_later"):
        return TimedLooks(cast("HasTimers", stream))
    return Sweeper(task_group)


_POLL = getattr(select, "poll", None)  # not on Windows
_HANGUP = getattr(select, "POLLRDHUP", 0) | getattr(select, "POLLHUP", 0)  # POLLRDHUP: Linux


def hung_up(stream: object) -> bool:
    """Whether the peer on ``stream``'s socket has hung up, asked without reading it.

    For a connection whose reading is paused: its end of stream waits behind
    what it sent, which nobody reads meanwhile. ``False`` where there is no
    socket to ask (a WebSocket or NATS frame stream: their heartbeats tell).
    """
    extra = getattr(stream, "extra", None)
    sock = extra(anyio.abc.SocketAttribute.raw_socket, None) if extra is not None else None
    if sock is None or sock.fileno() < 0 or _POLL is None:
        return False
    poller = _POLL()
    poller.register(sock.fileno(), _HANGUP)
    return any(events & _HANGUP for _, events in poller.poll(0))


def heartbeat_for(
    setting: float | Literal["auto"] | None, tcp: bool, stream: object = None
) -> float | None:
    """The heartbeat interval of one connection (``"auto"`` decided by its transport).

    ``"auto"``: what a whole-frame transport (``stream``, a ``FrameStream``)
    says, else 5 s over TCP and none over unix sockets, whose peer's end the
    kernel reports. Main's connections and both renderers' ask here.
    """
    if setting == "auto":
        if isinstance(stream, FrameStream):
            return stream.heartbeat_auto
        return 5.0 if tcp else None
    return setting
