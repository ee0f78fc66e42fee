"""Whether a blocking call polls the socket for its reply before it sleeps, and how long.

A thread that sleeps in ``recv`` until its reply comes is woken by the
kernel when the reply is written, and that wake-up (a context switch, on a
virtual machine an interrupt between cores) can be half of a whole round
trip: measured on a 2-core VM, ``multiprocessing.connection``'s round trip
took 60 us when its client slept and 28 us when it polled (docs/performance.md,
scenario S). So a call first reads without blocking, for at most ``limit``
seconds, and only then sleeps. It does so only while that pays:

* ``recent`` is a running mean of the link's round trips; once replies take
  longer than ``limit`` (a slow handler, a busy main), calls sleep at once,
  until round trips are quick again. Polling then costs at most ``limit`` of
  CPU per call that turns out slow.
* While polling is off, one call in ``_PROBE`` polls all the same, and a
  call that polled and was quick brings the mean down to its own time: the
  mean would otherwise see only calls that slept, slower by the very
  wake-up that polling saves, and could stay over the limit for good.
* Never where it cannot pay: with one CPU (main could not run meanwhile),
  while an ``IpcMain`` runs in this process, or main is this process's own
  unix peer (its loop would wait for the GIL, which a polling thread takes
  back between polls), or where sockets have no ``MSG_DONTWAIT``.
* A polling thread holds the GIL but for the instants of its ``recv``, so
  other threads of the process wait: the link stops polling once a read hands
  something to another thread (``_blockcall``; other callers wait on a
  condition, not for the GIL, until then), and ``limit`` is at most
  ``MAX_SPIN``, Python's default thread switch interval.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

__all__ = ("MAX_SPIN", "Spin", "main_entered", "main_left", "mains", "peer_is_this_process")

MAX_SPIN = 0.005  # seconds: sys.getswitchinterval()'s default

_PEERCRED = getattr(socket, "SO_PEERCRED", None)  # Linux: (pid, uid, gid) of a unix peer
_CRED = struct.Struct("3i")
_WEIGHT = 8  # the running mean moves 1/8 of the way to each new round trip
_PROBE = 16  # while polling is off, one call in this many polls all the same
mains = 0  # IpcMains running in this process (read by _blockcall's calls)
_mains_lock = threading.Lock()


def main_entered() -> None:
    """An ``IpcMain`` of this process started: no blocking call polls until it stops."""
    global mains
    with _mains_lock:
        mains += 1


def main_left() -> None:
    global mains
    with _mains_lock:
        mains -= 1


def _forked() -> None:
    """In a forked child: the parent's mains do not run here."""
    global mains, _mains_lock
    mains, _mains_lock = 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def peer_is_this_process(sock: socket.socket) -> bool:
    """Whether the other end of a unix socket is this process (as far as it can be told)."""
    if _PEERCRED is None or sock.family != getattr(socket, "AF_UNIX", None):
        return False
    try:
        pid, _, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, _PEERCRED, _CRED.size))
    except OSError:
        return False
    return bool(pid == os.getpid())


class Spin:
    """One link's polling policy; times in nanoseconds of ``time.monotonic_ns``.

    The ``limit`` argument is in seconds, at most ``MAX_SPIN`` (the caller
    checks it); the attribute keeps it in nanoseconds, 0 where polling is off.
    """

    __slots__ = ("hits", "limit", "misses", "recent", "skipped")

    def __init__(self, limit: float, sock: socket.socket, *, can_poll: bool) -> None:
        worth = can_poll and limit > 0 and _cpus() > 1 and not peer_is_this_process(sock)
        self.limit = int(limit * 1e9) if worth else 0
        self.recent = 0  # the running mean of round trips
        self.skipped = 0  # calls that did not poll since the last that did
        self.hits = 0  # reads that polling took (for tests and curious users)
        self.misses = 0  # polls that ran out, so the call slept

    def until(self, start: int) -> int:
        """When a call started at ``start`` stops polling; 0: do not poll."""
        limit = self.limit
        if not limit or mains:
            return 0
        if self.recent > limit:
            self.skipped += 1
            if self.skipped % _PROBE:
                return 0
        self.skipped = 0
        return start + limit

    def took(self, elapsed: int, polled: bool) -> None:
        """A call's round trip took ``elapsed``: move the running mean."""
        recent = self.recent + (elapsed - self.recent) // _WEIGHT
        if polled and elapsed <= self.limit:
            recent = min(recent, elapsed)  # polling paid: go on
        self.recent = recent
