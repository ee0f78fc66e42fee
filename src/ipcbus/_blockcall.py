"""A blocking link's calls to main: write the request, then lead (read) or follow to the reply.

``Calling`` is a base class of ``_blocking.BlockingLink`` (as ``Connection``
is cut by direction), so the common case of a call stays one method. Rules:

* **One reader at a time** (leader/follower). A thread reads only while it
  leads (``_leading``, under ``_cond``). A caller whose reply another leader
  reads is woken by it; a caller that waits while nobody leads takes over;
  so does a call whose request is out and finds nobody leading (the common
  case, whose first read ``call`` makes inline). Nobody leads while
  writing: a write may wait for main to read, and main for us.
* **Polling** (``_spin``): a leader polls the socket for up to ``spin``
  seconds before its reads sleep, while replies come that quickly.
* **Giving up** (a timeout, Ctrl-C): the call steps down, then tells main
  to stop (a Cancel); a late reply is dropped.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from . import _interrupts, _spin
from ._blockio import Watch, poll_recv, send_all
from ._blockread import Waiter
from ._blocktls import MemoryTLS
from ._calls import CALL_NAMES, reply_value, timed_out
from ._errors import ConnectionClosedError, FrameTooLargeError
from ._events import Event, ReplyReceived
from ._interrupts import deliver_deferred, link_opened
from ._protocol import OPEN, Connection
from ._spin import _WEIGHT, Spin
from ._values import DECODE_ERRORS, ENCODE_ERRORS, encode_error, too_large, untyped_decoder
from ._wire import RequestKind

__all__ = ("Calling",)

_MAIN = threading.main_thread().ident
_monotonic = time.monotonic
_monotonic_ns = time.monotonic_ns
_decode = untyped_decoder.decode  # decode_value's decoder
_FOLLOW = 0.1  # seconds a follower waits for the leader before it looks up again


class Calling:
    """Calls to main, each waited for in its caller's thread."""

    # Kept by BlockingLink; declared here for the type checker.
    sock: socket.socket
    conn: Connection
    name: str
    spin: Spin
    reads: int
    _sigint: bool | None
    _send_timeout: float | None
    _lock: threading.Lock
    _write: threading.Lock
    _held: threading.Lock
    _cond: threading.Condition
    _leading: bool
    _active: int
    _sleepers: int
    _ended: bool
    _torn: bool
    _waiters: dict[int, Waiter]
    _sent: deque[int]
    _buffer: memoryview
    _watch: Watch
    _tls: MemoryTLS | None

    if TYPE_CHECKING:

        @property
        def reason(self) -> str: ...
        def closed_error(self) -> ConnectionClosedError: ...
        def flush(self, wait: bool = True) -> None: ...
        def lost(self, reason: str) -> None: ...
        def _read(self, timeout: float | None, own: Waiter | None, spin_until: int = 0) -> bool: ...
        def _failed(self, exc: BaseException, got: deque[int], own: Waiter | None) -> bool: ...
        def _take(self, data: bytes, why: str | None, own: Waiter | None) -> bool: ...
        def _hand_on(self, events: list[Event], pending: object, own: Waiter | None) -> bool: ...

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
            waiter = Waiter()
            write = self._write
            writing = write.acquire(False)  # the common case: write it ourselves, at once
            request_id = 0
            try:
                with self._lock:
                    if conn.state is not OPEN:
                        raise self.closed_error()
                    try:
                        request_id = conn.start_request(kind, channel, args)
                    except ENCODE_ERRORS as exc:
                        raise encode_error(CALL_NAMES[kind], channel, args, exc) from None
                    except FrameTooLargeError as exc:
                        raise too_large(CALL_NAMES[kind], channel, exc) from None
                    if writing:
                        data = conn.data_to_send()
                        if self._tls is not None:
                            data = self._tls.wrap(data)
                    self._waiters[request_id] = waiter
            except BaseException as exc:
                if writing:
                    write.release()
                if request_id and request_id not in self._waiters:
                    # Queued, but its bytes could not be taken (a MemoryError, a
                    # bug): main must not run a call whose caller got an error,
                    # and bytes taken and not sent would tear the stream.
                    self.lost(f"a request could not be written: {exc!r}")
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
                                read = bytes(buffer[:count])
                                with self._lock:
                                    if (lone := conn.receive_alone(read)) is not None:
                                        events = [lone]  # the usual read: our reply
                                    else:
                                        conn.receive_data(read)
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
                            raise timed_out(kind, channel, self.name, timeout) from None
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

    def _wait(self, waiter: Waiter, deadline: float | None, spin_until: int) -> None:
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

    def _lead(self, waiter: Waiter, deadline: float | None, spin_until: int) -> None:
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
