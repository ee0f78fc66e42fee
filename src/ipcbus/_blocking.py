"""A protocol ``Connection`` driven over a blocking socket by the threads that call on it.

``ipcbus.sync`` runs on it. No event loop is on the path of a call: the
calling thread queues its request, writes it, and reads the socket itself
until its reply arrives (as ``multiprocessing.connection`` does), handling
whatever else it reads on the way. ``BlockingLink`` is one object in three
rooms, cut like ``Connection`` so that a call stays one object's methods:

* here: start and end, writes, messages and answers to main;
* ``_blockcall.Calling``: a call, from its request to its reply, and who
  leads (reads) while calls wait;
* ``_blockread.Reading``: one read, its events handed on in order; the
  reader thread between calls, and its heartbeat.

Rules of this room:

* **Writing**: ``_lock`` guards the Connection (queueing a frame, feeding it
  bytes: short holds); ``_write`` is held while bytes go out, and they are
  taken from the Connection under it, so frames leave in the order queued.
  A reader never waits for ``_write`` (a write may wait for main to read,
  and main for us): it only tries, and the holder sends what was queued
  meanwhile before it lets go. A write that makes no progress for
  ``send_timeout`` ends the link.
* **The end** (EOF, a Goodbye, ``close``, a dead link) wakes every waiter,
  which then fails with ``ConnectionClosedError``: nothing waits forever.
* **TLS** (``_blocktls``): an ``ssl.SSLObject`` over memory buffers, kept
  under ``_lock`` with the Connection, so the socket stays a plain one any
  thread may poll.
* **Ctrl-C** (``_interrupts``): an interrupt is held off while a frame of
  any of the three rooms is on the main thread's stack, and raised at the
  link's next safe point.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from contextlib import suppress
from typing import Any

from ._blockcall import Calling
from ._blockio import DONTWAIT, READ_SIZE, Watch, send_all
from ._blockread import Heartbeat, Reading, Sink, Waiter
from ._blocktls import MemoryTLS
from ._calls import error_info
from ._errors import ConnectionClosedError, FrameTooLargeError, IpcTimeoutError
from ._events import ConnectionTerminated, Event
from ._interrupts import deliver_deferred, link_closed, link_opened
from ._protocol import CLOSED, HANDSHAKE, OPEN, Connection
from ._spin import Spin
from ._values import ENCODE_ERRORS, encode_error, too_large
from ._wire import CloseCode, ErrorKind, PortRef

__all__ = ("BlockingLink", "Sink")

logger = logging.getLogger("ipcbus")

_MAIN = threading.main_thread().ident

#: Seconds ``close`` waits for a write in progress to finish, and for its own
#: Goodbye to leave, before it cuts the connection: main may have stopped reading.
CLOSE_WAIT = 2.0


class BlockingLink(Calling, Reading):
    """One renderer's connection to main, driven by the threads that use it."""

    def __init__(
        self,
        sock: socket.socket,
        conn: Connection,
        sink: Sink,
        *,
        name: str = "main",
        send_timeout: float | None,
        heartbeat_interval: float | None,
        heartbeat_timeout: float | None,
        send_tracebacks: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        spin: float = 0.0,
    ) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.conn = conn
        self.name = name
        self._sink = sink
        self._send_timeout = send_timeout
        self._send_tracebacks = send_tracebacks
        self._lock = threading.Lock()  # the Connection (and the TLS object)
        self._write = threading.Lock()  # the socket's sending side
        # Leadership and waiters. ``_held`` is _cond's lock: ``with held`` is
        # a call in C, ``with cond`` two in Python (Condition's __enter__ and
        # __exit__); a call's short holds that do not wait use it (notifying
        # under it is notifying under _cond).
        self._held = threading.Lock()
        self._cond = threading.Condition(self._held)
        self._leading = False
        self._active = 0  # calls waiting for their replies
        self._sleepers = 0  # threads waiting on _cond
        self._ended = False
        self._torn = False  # the socket is closed
        self._waiters: dict[int, Waiter] = {}
        self._sent: deque[int] = deque()  # the counts of one write's sends (_send)
        self._buffer = memoryview(bytearray(READ_SIZE))  # what one read takes (_read)
        #: Whether this link counts for _interrupts' SIGINT handler; None: not
        #: asked yet (it is asked from the main thread only, once).
        self._sigint: bool | None = None
        self.termination: ConnectionTerminated | None = None
        self.closed = threading.Event()
        self._watch = Watch(sock.fileno())
        self.spin = Spin(spin, sock, can_poll=bool(DONTWAIT))
        self._reader: threading.Thread | None = None
        self.reads = 0
        self._beat = Heartbeat(heartbeat_interval, heartbeat_timeout)  # the reader thread's
        self._tls: MemoryTLS | None = None
        if ssl_context is not None:
            self._tls = MemoryTLS(ssl_context, server_hostname)

    # ---- starting and ending ----------------------------------------------------

    def start(self, timeout: float) -> None:
        """The TLS handshake (if any) and the protocol's; then the reader thread starts.

        Returns once the handshake is done or the link closed (refused:
        ``conn.renderer_id`` stays 0, ``termination`` says why).

        Raises:
            IpcTimeoutError: no handshake within ``timeout`` seconds.
            ssl.SSLError: the TLS handshake failed.
        """
        deadline = time.monotonic() + timeout
        if threading.get_ident() == _MAIN:
            self._sigint = link_opened()  # Ctrl-C is kept out of our bookkeeping (_interrupts)
        if self._tls is not None:
            self._tls.handshake(self.sock, deadline)
        self._leading = True  # nobody else is here yet
        try:
            self.flush()  # the Hello
            while self.conn.state is HANDSHAKE and not self._ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise IpcTimeoutError(
                        "main accepted the connection but did not complete the handshake "
                        f"within {timeout} s"
                    )
                self._read(remaining, None)
        finally:
            self._leading = False
        if self.conn.state is OPEN:
            self._beat.begin()
            self._reader = threading.Thread(
                target=self._read_between_calls, name="ipcbus.sync reader", daemon=True
            )
            self._reader.start()
        deliver_deferred()  # a Ctrl-C that came during the handshake

    def close(self, reason: str = "the renderer disconnected") -> None:
        """Say Goodbye, wake every waiter, stop the reader thread and close the socket."""
        events: list[Event] = []
        with self._lock:
            if self.conn.state is not CLOSED:
                self.conn.close(CloseCode.NORMAL, reason)
                events = self.conn.events_received()
        # The Goodbye, after a write in progress: main gets whole frames, then
        # it. A write main does not take must not hold close() beyond
        # CLOSE_WAIT (_shutdown then cuts it).
        self.flush(within=CLOSE_WAIT)
        if events:
            self._deliver(events, None)
        self._shutdown()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join()
        with self._cond:
            while self._leading:  # a leader reads the end at once and steps down
                self._sleepers += 1
                try:
                    self._cond.wait()
                finally:
                    self._sleepers -= 1
        with self._write:
            if not self._torn:
                self._torn = True
                self._watch.close()
                self.sock.close()
        counted, self._sigint = self._sigint, False  # asked, and never again
        link_closed(bool(counted))
        deliver_deferred()  # a Ctrl-C that came while we closed

    def lost(self, reason: str) -> None:
        """The link failed (a write, or main's silence): end the connection."""
        events: list[Event] = []
        with self._lock:
            if self.conn.state is not CLOSED:
                logger.warning("connection to %s lost: %s", self.name, reason)
                self.conn.receive_eof(reason)
                events = self.conn.events_received()
        self._shutdown()
        if events:
            self._deliver(events, None)

    def _shutdown(self) -> None:
        """Wake a thread blocked on the socket (it reads EOF); the descriptor stays open."""
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    @property
    def reason(self) -> str:
        return self.termination.reason if self.termination else "not connected"

    def closed_error(self) -> ConnectionClosedError:
        return ConnectionClosedError(
            f"connection to {self.name} is closed ({self.reason}); connect again to send more"
        )

    # ---- messages to main (calls: _blockcall) -------------------------------------

    def send(self, channel: str, args: tuple[Any, ...]) -> None:
        """Queue a message and write it (blocking while main does not read)."""
        try:
            with self._lock:
                if self.conn.state is not OPEN:
                    raise self.closed_error()
                try:
                    self.conn.send_message(channel, args)
                except ENCODE_ERRORS as exc:
                    raise encode_error("send", channel, args, exc) from None
                except FrameTooLargeError as exc:
                    raise too_large("send", channel, exc) from None
            self.flush()
        finally:
            deliver_deferred()

    # ---- answering main -----------------------------------------------------------

    def awaiting_replies(self) -> bool:
        """Whether a caller waits for a reply from main (a read may bring it)."""
        return bool(self._waiters)

    def wants_reply(self, request_id: int) -> bool:
        """Whether main still waits for the reply to ``request_id`` (not cancelled)."""
        with self._lock:
            return self.conn.is_serving(request_id)

    def reply(self, request_id: int, channel: str, value: Any) -> None:
        """Answer main's request ``request_id`` (if it still wants it) with ``value``."""
        with self._lock:
            try:
                queued = self.conn.send_reply(request_id, True, value)
            except FrameTooLargeError as exc:
                logger.error("the result for %r is too large to send: %s", channel, exc)
                error: Exception = too_large("return", channel, exc)
                queued = self._queue_error(request_id, ErrorKind.REMOTE, error)
            except ENCODE_ERRORS as exc:
                logger.error(
                    "the result for %r (of type %s) cannot be sent; the caller gets a RemoteError",
                    channel,
                    type(value).__qualname__,
                )
                error = encode_error("return a value", channel, value, exc, named="the value")
                queued = self._queue_error(request_id, ErrorKind.REMOTE, error)
        if queued:
            self.flush()

    def reply_error(self, request_id: int, kind: ErrorKind, exc: BaseException) -> None:
        with self._lock:
            queued = self._queue_error(request_id, kind, exc)
        if queued:
            self.flush()

    def _queue_error(self, request_id: int, kind: ErrorKind, exc: BaseException) -> bool:
        info = error_info(kind, exc, with_traceback=self._send_tracebacks)
        return self.conn.send_error(request_id, info)

    def close_ports(self, refs: list[PortRef]) -> None:
        """Close port ends main sent (this renderer takes none): their peers see "close"."""
        with self._lock:
            if self.conn.state is OPEN:
                for ref in refs:
                    self.conn.send_port_close(ref.id)
        self.flush()

    # ---- writing ----------------------------------------------------------------------

    def flush(self, wait: bool = True, *, within: float | None = None) -> None:
        """Write what the core has queued; with ``wait=False`` only if nobody is writing.

        ``within``: wait at most that long for a write in progress, and for
        each bit of this one's progress (``close``).
        """
        write, lock = self._write, self._lock
        while True:
            if not (write.acquire(timeout=within) if within is not None else write.acquire(wait)):
                return  # the writer sends it before it lets go (or close cuts it)
            try:
                with lock:
                    data = self.conn.data_to_send()
                    if self._tls is not None:
                        data = self._tls.wrap(data)
                if data and not self._torn:
                    self._send(data, within)
            finally:
                write.release()
            if not (self.conn.pending_output or (self._tls is not None and self._tls.pending)):
                return

    def _send(self, data: bytearray, within: float | None = None) -> None:
        """Write all of ``data`` (holding ``_write``); a stalled or failed write ends the link.

        It stalls after ``send_timeout``, or ``within`` if that is sooner.
        """
        timeout = self._send_timeout
        if within is not None:
            timeout = within if timeout is None else min(timeout, within)
        send_all(self.sock, data, self._sent, timeout, self.name, self.lost)
