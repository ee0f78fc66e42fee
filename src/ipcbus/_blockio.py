"""Blocking socket I/O for a blocking link: waits, and reads and writes that no interrupt tears.

A Ctrl-C is raised in the main thread between two bytecodes, so also just
after a ``recv`` or ``send`` has returned and before its result is stored:
the bytes read, or the count written, would be lost, and with them where the
stream's frames begin. Here each of those calls is made from C by ``map``
and its result kept by ``deque.extend``, also in C, so that whatever
interrupts the thread afterwards, the caller still has it. ``_interrupts``
decides where an interrupt is raised; the waits marked ``interruptible``
are where it may be.
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from . import _interrupts
from ._interrupts import deliver_deferred, interruptible

__all__ = ("DONTWAIT", "READ_SIZE", "Watch", "poll_recv", "ready", "recv", "send_all")

READ_SIZE = 256 * 1024
DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
# map()'s iterables: recv_into(buffer, 0, flags), send(data or a view of it, DONTWAIT)
_BLOCK_ARG = (0,)
_DONTWAIT_ARG = (DONTWAIT,)
_SLICE = 0.1  # seconds: how often a stalled write looks for a waiting Ctrl-C
_GIVE_UP = 1.0  # seconds a stalled write may keep a Ctrl-C waiting


def _nothing() -> None:
    """Where there is no epoll, the watch (a poll) cannot be switched off."""


class Watch:
    """The reader thread's wait for the socket, switched off while calls read it."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._poll = select.poll()
        # Switching the watch off and on (with epoll; a poll cannot be): the
        # bound epoll.modify, partly applied, so that the two switches of
        # every call are no Python call. They raise OSError or ValueError
        # once the link is closed, which the caller ignores.
        self.off: Callable[[], object] = _nothing
        self.on: Callable[[], object] = _nothing
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
            self.off = partial(self._epoll.modify, fd, 0)
            self.on = partial(self._epoll.modify, fd, select.EPOLLIN)
        else:
            self._poll.register(fd, select.POLLIN)

    def wait(self, timeout: float | None) -> bool:
        """Whether the socket may be readable (or hung up) before ``timeout`` s."""
        if self._epoll is not None:
            return bool(self._epoll.poll(-1 if timeout is None else timeout, 1))
        return bool(self._poll.poll(None if timeout is None else timeout * 1000))

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


@interruptible
def ready(fd: int, events: int, timeout: float | None) -> bool:
    """Whether ``fd`` has ``events`` (poll flags) within ``timeout`` s; Ctrl-C may stop it."""
    deliver_deferred()
    poll = select.poll()
    poll.register(fd, events)
    return bool(poll.poll(None if timeout is None else max(0.0, timeout) * 1000))


@interruptible
def recv(sock: socket.socket, got: deque[int], buffer: memoryview, *, block: bool) -> None:
    """``got.append(sock.recv_into(buffer))`` (``MSG_DONTWAIT`` unless ``block``), kept whole.

    Into one buffer the link keeps, not a fresh ``recv(READ_SIZE)``: glibc
    serves a 256 KiB allocation with ``mmap``, and shrinking and freeing it
    to fit a small read cost an ``mremap`` and a ``munmap`` on every read
    (a fifth of a blocking round trip's CPU, by py-spy).

    Raises what ``recv_into`` raises (``BlockingIOError`` for nothing to
    read); if an interrupt is raised after it returned, ``got`` holds the
    count and ``buffer`` the bytes.
    """
    if _interrupts.deferred:  # deliver_deferred() without the call, as a rule
        deliver_deferred()
    got.extend(map(sock.recv_into, (buffer,), _BLOCK_ARG, _BLOCK_ARG if block else _DONTWAIT_ARG))


@interruptible
def poll_recv(sock: socket.socket, got: deque[int], buffer: memoryview, until: int) -> bool:
    """``recv`` without blocking, again and again, until bytes (or EOF) come: True;
    False once ``time.monotonic_ns()`` reaches ``until`` with nothing read.

    Kept whole as :func:`recv` is: if an interrupt is raised after a read
    returned, ``got`` holds its count. Raises what ``recv_into`` raises, but
    ``BlockingIOError``.
    """
    if _interrupts.deferred:  # deliver_deferred() without the call, as a rule
        deliver_deferred()
    clock = time.monotonic_ns
    into = sock.recv_into
    args = (buffer,)
    while True:
        try:
            got.extend(map(into, args, _BLOCK_ARG, _DONTWAIT_ARG))
            return True
        except BlockingIOError:
            if clock() >= until:
                return False


def _writable(fd: int, timeout: float | None) -> bool | None:
    """Wait until ``fd`` takes more bytes: ``True``; ``False`` once ``timeout`` passed.

    Not :func:`interruptible`: a write in progress is finished before Ctrl-C
    is raised (half a frame would end the link), unless the peer takes
    nothing for ``_GIVE_UP`` seconds after it came: then ``None`` (end the
    link and raise it), so that a peer that stopped reading cannot keep the
    program from being interrupted.
    """
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    deadline = None if timeout is None else time.monotonic() + timeout
    noticed = None
    while True:
        wait = _SLICE if deadline is None else max(0.0, min(_SLICE, deadline - time.monotonic()))
        if poll.poll(wait * 1000):
            return True
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        if _interrupts.deferred:
            noticed = noticed or now
            if now - noticed >= _GIVE_UP:
                return None


def send_all(
    sock: socket.socket,
    data: bytes | bytearray,
    sent: deque[int],
    timeout: float | None,
    peer: str,
    lost: Callable[[str], None],
) -> None:
    """Write all of ``data``, waiting at most ``timeout`` s for each bit of progress.

    A write that stalls or fails calls ``lost`` with why (and returns). An
    exception that lands in the middle (a Ctrl-C under a handler of the
    program's own) is raised after the rest of the frame is written, since
    half a frame would have every later one misread; if that cannot be done
    too, ``lost`` is called first. ``sent`` is scratch space, cleared here.
    """
    sent.clear()
    try:
        if not DONTWAIT:
            sock.sendall(data)
            return
        end = len(data)
        try:
            try:
                # The first try takes ``data`` itself: a small frame leaves
                # whole, with no view made and none sliced.
                sent.extend(map(sock.send, (data,), _DONTWAIT_ARG))
            except BlockingIOError:
                pass
            if sum(sent) == end:
                return
            view = memoryview(data)
            while (done := sum(sent)) < end:
                try:
                    # sock.send(view[done:], DONTWAIT), its count kept (module docstring)
                    sent.extend(map(sock.send, (view[done:],), _DONTWAIT_ARG))
                except BlockingIOError:
                    if not (writable := _writable(sock.fileno(), timeout)):
                        _stalled(writable, timeout, peer, lost)
                        return
        except OSError:
            raise
        except BaseException:
            _finish(sock, memoryview(data)[sum(sent) :], timeout, peer, lost)
            raise
    except OSError as exc:
        lost(f"writing to {peer} failed: {exc.strerror or exc}")


def _stalled(
    writable: bool | None, timeout: float | None, peer: str, lost: Callable[[str], None]
) -> None:
    """End the link over a write the peer does not take; raise a Ctrl-C that waited on it."""
    if writable is None:
        lost(f"a write to {peer} was interrupted (Ctrl-C) while {peer} was not reading")
        deliver_deferred()
    else:
        lost(f"{peer} stopped reading: a write made no progress for {timeout} s")


def _finish(
    sock: socket.socket,
    rest: memoryview,
    timeout: float | None,
    peer: str,
    lost: Callable[[str], None],
) -> None:
    """Write the rest of an interrupted frame as any write; if that fails, or is
    interrupted again, the link ends."""
    try:
        while rest:
            try:
                rest = rest[sock.send(rest, DONTWAIT) :]
            except BlockingIOError:
                if not (writable := _writable(sock.fileno(), timeout)):
                    _stalled(writable, timeout, peer, lost)
                    return
    except BaseException as exc:
        lost(f"a write to {peer} was interrupted in the middle of a frame")
        if not isinstance(exc, OSError):
            raise
