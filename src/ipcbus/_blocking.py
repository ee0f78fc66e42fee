"""A protocol ``Connection`` driven over a blocking socket by the threads that call on it.

``ipcbus.sync`` runs on it. No event loop is on the path of a call: the
calling thread queues its request, writes it, and reads the socket itself
until its reply arrives (as ``multiprocessing.connection`` does), handling
whatever else it reads on the way. Rules:

* **One reader at a time** (leader/follower). A thread reads only while it
  leads (``_leading``, under ``_cond``), and hands on every event of a read
  (replies to their waiters, the rest to the sink, in order) before it reads
  again or steps down: no bytes are read, and no event delivered, out of
  order. A caller whose reply another leader reads is woken by it; a caller
  that waits while nobody leads takes over; so does a call whose request is
  out and finds nobody leading (the common case, whose first read ``call``
  makes inline). Nobody leads while writing: a write may wait for main to
  read, and main for us.
* **Between calls** the reader thread waits for the socket to become
  readable without leading, then leads for one read that does not block.
  From before a call's request is written until no call waits, it does not
  watch the socket (epoll interest off), so a reply wakes only the thread
  that reads it.
* **Writing**: ``_lock`` guards the Connection (queueing a frame, feeding it
  bytes: short holds); ``_write`` is held while bytes go out, and they are
  taken from the Connection under it, so frames leave in the order queued.
  A reader never waits for ``_write`` (a write may wait for main to read,
  and main for us): it only tries, and the holder sends what was queued
  meanwhile before it lets go.
* **Liveness**: the reader thread sends heartbeat pings and ends a link that
  stays silent; a write that makes no progress for ``send_timeout`` ends it.
  Main's pings are answered by the core, flushed by whoever read them.
* **The end** (EOF, a Goodbye, ``close``, a dead link) wakes every waiter,
  which then fails with ``ConnectionClosedError``: nothing waits forever.
* **TLS** (``_blocktls``): an ``ssl.SSLObject`` over memory buffers, kept
  under ``_lock`` with the Connection, so the socket stays a plain one any
  thread may poll.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from . import _interrupts, _spin
from ._blockio import DONTWAIT, READ_SIZE, Watch, poll_recv, ready, recv, send_all
from ._blocktls import MemoryTLS
from ._calls import error_info, reply_value
from ._errors import ConnectionClosedError, FrameTooLargeError, IpcTimeoutError
from ._events import ConnectionTerminated, Event, ReplyReceived
from ._interrupts import deliver_deferred, link_closed, link_opened
from ._protocol import CLOSED, HANDSHAKE, OPEN, Connection
from ._spin import _WEIGHT, Spin
from ._values import DECODE_ERRORS, ENCODE_ERRORS, encode_error, too_large, untyped_decoder
from ._wire import CloseCode, ErrorKind, PortRef, RequestKind

__all__ = ("BlockingLink", "Sink")

logger = logging.getLogger("ipcbus")

_MAIN = threading.main_thread().ident
_monotonic = time.monotonic
_monotonic_ns = time.monotonic_ns
_decode = untyped_decoder.decode  # decode_value's decoder
_FOLLOW = 0.1  # seconds a follower waits for the leader before it looks up again
_WHAT = {RequestKind.INVOKE: "invoke", RequestKind.SYNC: "send_sync"}  # for messages

#: Receives, in order, every event but replies (messages, main's requests, the end).
Sink = Callable[[list[Event]], None]


class _Waiter:
    """One call's reply, once read (by its own thread or another leader)."""

    # A class default, not an __init__: making one is then a call in C alone
    # (one per call of the link; the instance dict appears with the reply).
    reply: ReplyReceived | None = None


class BlockingLink:
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
        self._waiters: dict[int, _Waiter] = {}
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
        # liveness (the reader thread's)
        self._interval = heartbeat_interval
        self._silence = heartbeat_timeout or (3 * heartbeat_interval if heartbeat_interval else 0)
        self._seen_reads = 0
        self._heard = self._next_ping = 0.0
        self._nonce = 0
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
            self._heard = time.monotonic()
            self._next_ping = self._heard + (self._interval or 0)
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
        self.flush()  # the Goodbye
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

    # ---- calls to main ----------------------------------------------------------

    def call(
        self, kind: RequestKind, channel: str, args: tuple[Any, ...], timeout: float | None
    ) -> Any:
        """Make a request, wait for its reply in this thread; the decoded value, or raise.

        Every instruction between one call's reply and the next call's request
        counts twice: main goes to sleep in that gap, and waking it costs as
        much again (docs/performance.md, scenario S). So the common case, a
        call alone on the link that polls and reads its reply whole in one
        read, runs inline here; anything else goes on through ``_lead`` or
        ``_wait`` from where it is.
        """
        if self._sigint is None and threading.get_ident() == _MAIN:
            self._sigint = link_opened()  # connected from another thread: see start
        try:
            conn = self.conn
            waiter = _Waiter()
            write = self._write
            writing = write.acquire(False)  # the common case: write it ourselves, at once
            try:
                with self._lock:
                    if conn.state is not OPEN:
                        raise self.closed_error()
                    try:
                        request_id = conn.start_request(kind, channel, args)
                    except ENCODE_ERRORS as exc:
                        raise encode_error(_WHAT[kind], channel, args, exc) from None
                    except FrameTooLargeError as exc:
                        raise too_large(_WHAT[kind], channel, exc) from None
                    self._waiters[request_id] = waiter
                    if writing:
                        data = conn.data_to_send()
                        if self._tls is not None:
                            data = self._tls.wrap(data)
            except BaseException:
                if writing:
                    write.release()
                raise
            held = self._held
            with held:
                self._active += 1
                if self._active == 1:
                    try:
                        self._watch.off()  # before the request leaves (the reply is ours)
                    except (OSError, ValueError):  # closed meanwhile
                        pass
            alone = False  # whether this call leads, from once its request is out (below)
            spin = self.spin
            start = _monotonic_ns()
            try:
                try:
                    try:
                        if writing and not self._torn:
                            send_all(
                                self.sock,
                                data,
                                self._sent,
                                self._send_timeout,
                                self.name,
                                self.lost,
                            )
                    finally:
                        if writing:
                            write.release()
                    if not writing or conn.pending_output:
                        self.flush()
                    # Main is at work now: what is left to set up costs the call nothing.
                    deadline = None if timeout is None else _monotonic() + timeout
                    limit = spin.limit
                    if limit and spin.recent <= limit and not _spin.mains:
                        spin.skipped = 0  # Spin.until's common case, inline
                        spin_until = start + limit
                    else:
                        spin_until = spin.until(start)
                    if deadline is not None and spin_until:
                        spin_until = min(spin_until, int(deadline * 1e9))
                    # Lead at once if nobody reads (the common case): the reply is
                    # ours to read, with no hand-over. Not before the request is out,
                    # so that no write of ours keeps another caller from reading.
                    with held:
                        if not self._leading and not self._ended and waiter.reply is None:
                            alone = self._leading = True
                    if not alone:
                        self._wait(waiter, deadline, spin_until)
                    else:
                        polling = spin_until
                        if polling and self._tls is None:
                            # _lead's first read, inline: _read's poll, then
                            # _take's common case, our reply alone.
                            got: deque[int] = deque()
                            buffer = self._buffer
                            try:
                                polled: bool | None = poll_recv(self.sock, got, buffer, polling)
                            except BaseException as exc:
                                self._failed(exc, got, waiter)  # the link ended, or it raises
                                polled = None
                            if polled is False:
                                spin.misses += 1
                                polling = 0  # nothing came in time: sleep
                            elif polled and not (count := got.popleft()):
                                self._take(b"", None, waiter)  # main hung up
                            elif polled:
                                spin.hits += 1
                                with self._lock:
                                    conn.receive_data(bytes(buffer[:count]))
                                    events = conn.events_received()
                                    pending = conn.pending_output
                                self.reads += 1
                                if (
                                    len(events) == 1
                                    and not pending
                                    and type(event := events[0]) is ReplyReceived
                                    and event.request_id == request_id
                                ):
                                    waiter.reply = event
                                elif self._hand_on(events, pending, waiter):
                                    polling = 0  # another thread has work: let it have the GIL
                        if waiter.reply is None:
                            self._lead(waiter, deadline, polling)
                except BaseException as exc:  # timed out, or interrupted (Ctrl-C)
                    if alone:  # step down before writing the Cancel, as _wait does
                        with held:
                            alone = self._leading = False
                            if self._sleepers:
                                self._cond.notify_all()
                    spin.took(_monotonic_ns() - start, False)  # one that timed out: slow
                    if waiter.reply is None:
                        with self._lock:
                            conn.cancel_request(request_id)
                        self.flush()  # stop main's handler now
                        if isinstance(exc, TimeoutError):
                            raise IpcTimeoutError(
                                f"{_WHAT[kind]} {channel!r} got no reply within {timeout} s"
                                + (
                                    "; the remote handler was told to stop"
                                    if kind is RequestKind.INVOKE
                                    else "; a late reply will be discarded"
                                )
                            ) from None
                    raise
            finally:
                del self._waiters[request_id]
                with held:
                    if alone:
                        self._leading = False
                    self._active -= 1
                    if not self._active:
                        try:
                            self._watch.on()
                        except (OSError, ValueError):  # closed meanwhile
                            pass
                    if self._sleepers:  # a follower leads next; a reader thread waits for calls
                        self._cond.notify_all()
            # Spin.took, inline: the running mean of round trips.
            elapsed = _monotonic_ns() - start
            recent = spin.recent + (elapsed - spin.recent) // _WEIGHT
            spin.recent = min(recent, elapsed) if spin_until and elapsed <= spin.limit else recent
            reply = waiter.reply
            if reply is not None and reply.ok:
                try:
                    return _decode(reply.value)  # reply_value's common case, inline
                except DECODE_ERRORS:
                    pass
            return reply_value(reply, kind, channel, self)
        finally:
            if _interrupts.deferred:  # deliver_deferred() without the call, as a rule
                deliver_deferred()  # a Ctrl-C that came on the way out, error or not

    def _wait(self, waiter: _Waiter, deadline: float | None, spin_until: int) -> None:
        """Until ``waiter`` has its reply or the link ends: lead (read) or follow.

        Raises:
            TimeoutError: ``deadline`` passed first.
        """
        cond = self._cond
        cond.acquire()
        try:
            while waiter.reply is None and not self._ended:
                if self._leading:  # another thread reads: it wakes us
                    remaining = None if deadline is None else deadline - _monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError
                    self._sleepers += 1
                    try:
                        # In slices, so an interrupt noted meanwhile is not kept waiting.
                        cond.wait(_FOLLOW if remaining is None else min(remaining, _FOLLOW))
                        deliver_deferred()
                    finally:
                        self._sleepers -= 1
                    continue
                self._leading = True
                cond.release()
                try:
                    self._lead(waiter, deadline, spin_until)
                finally:
                    cond.acquire()
                    self._leading = False
                    if self._sleepers:
                        cond.notify_all()  # a follower leads next
        finally:
            cond.release()

    def _lead(self, waiter: _Waiter, deadline: float | None, spin_until: int) -> None:
        """Read, as the leader, until ``waiter`` has its reply or the link ends.

        Polls the socket until ``spin_until`` (``time.monotonic_ns``; 0: not
        at all) before its reads sleep (``_spin``).

        Raises:
            TimeoutError: ``deadline`` passed first.
        """
        if spin_until:
            while waiter.reply is None and not self._ended:
                if self._read(None, waiter, spin_until):
                    break  # another thread has work: let it have the GIL
                if waiter.reply is None and _monotonic_ns() >= spin_until:
                    break
        while waiter.reply is None and not self._ended:
            if deadline is None:
                self._read(None, waiter)
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self._read(remaining, waiter)

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

    # ---- reading --------------------------------------------------------------------

    def _read(self, timeout: float | None, own: _Waiter | None, spin_until: int = 0) -> bool:
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

    def _failed(self, exc: BaseException, got: deque[int], own: _Waiter | None) -> bool:
        """A read raised ``exc``: end the link over an ``OSError`` (as ``_take``); else
        (Ctrl-C) feed the core what was read all the same (``got``: its count), raise it."""
        if isinstance(exc, OSError):
            return self._take(b"", f"reading from {self.name} failed: {exc.strerror or exc}", own)
        if got:
            self._take(bytes(self._buffer[: got.popleft()]), None, own)
        raise exc

    def _take(self, data: bytes, why: str | None, own: _Waiter | None) -> bool:
        """Feed one read to the core, hand its events on, flush; as ``_read``."""
        tls = self._tls
        with self._lock:
            conn = self.conn
            plain = data
            if data and tls is not None:
                plain, why = tls.unwrap(data)
            if plain:
                conn.receive_data(plain)
            if not data or why is not None:
                conn.receive_eof(why)
            events = conn.events_received()
            pending = conn.pending_output or (tls is not None and tls.pending)
        self.reads += 1
        return self._hand_on(events, pending, own)

    def _hand_on(self, events: list[Event], pending: object, own: _Waiter | None) -> bool:
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

    def _deliver(self, events: list[Event], own: _Waiter | None) -> bool:
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
        if rest:
            self._sink(rest)
        if ended is not None:
            self.termination = ended
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            self.closed.set()
        elif woke:
            with self._cond:
                if self._sleepers:
                    self._cond.notify_all()
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
        interval = self._interval
        if not interval or self.conn.state is not OPEN:
            return None
        now = time.monotonic()
        if self.reads != self._seen_reads:
            self._seen_reads, self._heard = self.reads, now
        elif now - self._heard > self._silence:
            self.lost(f"no data from {self.name} for {now - self._heard:.1f} s (heartbeat)")
            return None
        if now >= self._next_ping:
            self._next_ping = now + interval
            with self._lock:
                if self.conn.state is OPEN:
                    self._nonce += 1
                    self.conn.send_ping(self._nonce)
            self.flush(wait=False)
        return max(0.01, min(self._next_ping, self._heard + self._silence) - now)

    # ---- writing ----------------------------------------------------------------------

    def flush(self, wait: bool = True) -> None:
        """Write what the core has queued; with ``wait=False`` only if nobody is writing."""
        write, lock = self._write, self._lock
        while True:
            if not write.acquire(wait):
                return  # the writer sends it before it lets go
            try:
                with lock:
                    data = self.conn.data_to_send()
                    if self._tls is not None:
                        data = self._tls.wrap(data)
                if data and not self._torn:
                    self._send(data)
            finally:
                write.release()
            if not (self.conn.pending_output or (self._tls is not None and self._tls.pending)):
                return

    def _send(self, data: bytearray) -> None:
        """Write all of ``data`` (holding ``_write``); a stalled or failed write ends the link."""
        send_all(self.sock, data, self._sent, self._send_timeout, self.name, self.lost)
