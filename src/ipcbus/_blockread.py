"""A blocking link's reads: feed the core, hand each event on in order; the reader thread.

``Reading`` is a base class of ``_blocking.BlockingLink`` (as ``Connection``
is cut by direction), so a call's reads stay one object's methods. Rules:

* **Who reads.** Only the thread that leads (``_leading``, under ``_cond``;
  ``_blockcall`` says who that is). It hands on every event of a read
  (replies to their waiters, the rest to the sink, in order) before it
  reads again or steps down: no bytes are read, and no event delivered, out
  of order.
* **Between calls** the reader thread waits for the socket to become
  readable without leading, then leads for one read that does not block.
  From before a call's request is written until no call waits, it does not
  watch the socket (epoll interest off), so a reply wakes only the thread
  that reads it.
* **Liveness** (``Heartbeat``): the reader thread sends heartbeat pings and
  ends a link that stays silent. Main's pings are answered by the core,
  flushed by whoever read them.
* **The end** (EOF, a Goodbye, a failed read) wakes every waiter, which then
  fails with ``ConnectionClosedError``: nothing waits forever.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._blockio import DONTWAIT, Watch, poll_recv, ready, recv
from ._blocktls import MemoryTLS
from ._events import ConnectionTerminated, Event, ReplyReceived
from ._protocol import OPEN, Connection
from ._spin import Spin

__all__ = ("Heartbeat", "Reading", "Sink", "Waiter")

logger = logging.getLogger("ipcbus")

#: Receives, in order, every event but replies (messages, main's requests, the end).
Sink = Callable[[list[Event]], None]


class Waiter:
    """One call's reply, once read (by its own thread or another leader)."""

    # A class default, not an __init__: making one is then a call in C alone
    # (one per call of the link; the instance dict appears with the reply).
    reply: ReplyReceived | None = None


class Heartbeat:
    """The reader thread's watch on main: when to ping, how long main may stay silent."""

    __slots__ = ("heard", "interval", "next_ping", "nonce", "seen_reads", "silence")

    def __init__(self, interval: float | None, timeout: float | None) -> None:
        self.interval = interval
        self.silence = timeout or (3 * interval if interval else 0)
        self.seen_reads = 0
        self.heard = self.next_ping = 0.0
        self.nonce = 0

    def begin(self) -> None:
        """The handshake is done: main counts as heard now, the first ping is due later."""
        self.heard = time.monotonic()
        self.next_ping = self.heard + (self.interval or 0)


class Reading:
    """One read at a time, by the leader; the reader thread between calls."""

    # Kept by BlockingLink; declared here for the type checker.
    sock: socket.socket
    conn: Connection
    name: str
    spin: Spin
    reads: int
    termination: ConnectionTerminated | None
    closed: threading.Event
    _sink: Sink
    _lock: threading.Lock
    _cond: threading.Condition
    _leading: bool
    _active: int
    _sleepers: int
    _ended: bool
    _waiters: dict[int, Waiter]
    _buffer: memoryview
    _watch: Watch
    _beat: Heartbeat
    _tls: MemoryTLS | None

    if TYPE_CHECKING:

        def flush(self, wait: bool = True) -> None: ...
        def lost(self, reason: str) -> None: ...

    def _read(self, timeout: float | None, own: Waiter | None, spin_until: int = 0) -> bool:
        """One read, as the leader: feed it to the core, hand its events on, flush.

        ``timeout``: ``None`` blocks until data (or EOF) comes; 0 does not
        block; else waits at most that long. With ``spin_until``, polls
        instead, until then (``time.monotonic_ns``), and reads nothing if
        nothing came. Returns whether it handed anything to another thread.
        """
        sock = self.sock
        got: deque[int] = deque()
        buffer = self._buffer
        try:
            if spin_until:
                if not poll_recv(sock, got, buffer, spin_until):
                    self.spin.misses += 1
                    return False
                self.spin.hits += 1
            elif timeout is None:
                recv(sock, got, buffer, block=True)
            elif timeout == 0 and DONTWAIT:
                recv(sock, got, buffer, block=False)
            elif ready(sock.fileno(), select.POLLIN, timeout):
                recv(sock, got, buffer, block=True)
            else:
                return False
        except BlockingIOError:
            return False
        except BaseException as exc:
            return self._failed(exc, got, own)
        return self._take(bytes(buffer[: got.popleft()]), None, own)

    def _failed(self, exc: BaseException, got: deque[int], own: Waiter | None) -> bool:
        """A read raised ``exc``: end the link over an ``OSError`` (as ``_take``); else
        (Ctrl-C) feed the core what was read all the same (``got``: its count), raise it."""
        if isinstance(exc, OSError):
            return self._take(b"", f"reading from {self.name} failed: {exc.strerror or exc}", own)
        if got:
            self._take(bytes(self._buffer[: got.popleft()]), None, own)
        raise exc

    def _take(self, data: bytes, why: str | None, own: Waiter | None) -> bool:
        """Feed one read to the core, hand its events on, flush; as ``_read``."""
        tls = self._tls
        with self._lock:
            conn = self.conn
            plain = data
            if data and tls is not None:
                plain, why = tls.unwrap(data)
            if why is None and (lone := conn.receive_alone(plain)) is not None:
                events = [lone]  # a reply, a push or a call of main's, alone in the read
            else:
                if plain:
                    conn.receive_data(plain)
                if not data or why is not None:
                    conn.receive_eof(why)
                events = conn.events_received()
            pending = conn.pending_output or (tls is not None and tls.pending)
        self.reads += 1
        return self._hand_on(events, pending, own)

    def _hand_on(self, events: list[Event], pending: object, own: Waiter | None) -> bool:
        """After a read: flush what the core queued (``pending``), hand ``events`` on.

        Returns whether it handed anything to another thread (as ``_read``).
        """
        if pending:
            self.flush(wait=False)  # a Pong, a Goodbye: the writer, if busy, sends it
        if len(events) == 1 and own is not None:  # the common case: our reply alone
            event = events[0]
            if type(event) is ReplyReceived and self._waiters.get(event.request_id) is own:
                own.reply = event
                return False
        return self._deliver(events, own) if events else False

    def _deliver(self, events: list[Event], own: Waiter | None) -> bool:
        """Replies to their waiters, the rest to the sink; whether another thread got any."""
        rest: list[Event] = []
        woke = False
        ended: ConnectionTerminated | None = None
        waiters = self._waiters
        for event in events:
            if type(event) is ReplyReceived:
                waiter = waiters.get(event.request_id)
                if waiter is not None:  # else its caller gave up (timed out)
                    waiter.reply = event
                    woke = woke or waiter is not own
            else:
                rest.append(event)
                if type(event) is ConnectionTerminated:
                    ended = event
        if woke and ended is None:
            # Before the sink, which may wait for room (``sync._syncloop``): a
            # handler waiting for its reply must get it to finish and make room.
            with self._cond:
                if self._sleepers:
                    self._cond.notify_all()
        if rest:
            self._sink(rest)
        if ended is not None:
            self.termination = ended
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            self.closed.set()
        return woke or bool(rest)

    def _read_between_calls(self) -> None:
        """The reader thread: reads while no call does; heartbeats."""
        cond, watch = self._cond, self._watch
        try:
            while not self._ended:
                timeout = self._liveness()
                if self._ended:
                    break
                if not watch.wait(timeout):
                    continue
                with cond:
                    if self._ended:
                        break
                    if self._leading or self._active:  # a caller reads: wait for the calls
                        self._sleepers += 1
                        try:
                            cond.wait(timeout)
                        finally:
                            self._sleepers -= 1
                        continue
                    self._leading = True
                try:
                    self._read(0, None)
                finally:
                    with cond:
                        self._leading = False
                        if self._sleepers:
                            cond.notify_all()
        except Exception:  # a bug: say so, and end the link rather than hang its callers
            logger.exception("the ipcbus.sync reader thread failed")
            self.lost("the reader thread failed")

    def _liveness(self) -> float | None:
        """Ping main when due, end a link main left silent; seconds until the next check."""
        beat = self._beat
        interval = beat.interval
        if not interval or self.conn.state is not OPEN:
            return None
        now = time.monotonic()
        if self.reads != beat.seen_reads:
            beat.seen_reads, beat.heard = self.reads, now
        elif now - beat.heard > beat.silence:
            self.lost(f"no data from {self.name} for {now - beat.heard:.1f} s (heartbeat)")
            return None
        if now >= beat.next_ping:
            beat.next_ping = now + interval
            with self._lock:
                if self.conn.state is OPEN:
                    beat.nonce += 1
                    self.conn.send_ping(beat.nonce)
            self.flush(wait=False)
        return max(0.01, min(beat.next_ping, beat.heard + beat.silence) - now)
