"""Ctrl-C in a blocking call, delivered only where it cannot tear a link's state apart.

Python runs a signal handler in the main thread between two bytecodes,
wherever that thread is: with ``KeyboardInterrupt`` raised there, a blocking
link (``_blocking`` and its rooms) could lose a read it had taken from the socket, stop
half-way through a frame, or leave a lock held and a leader flag set, and the
next call would misread the stream or wait forever. So while a blocking link
is open, SIGINT gets this module's handler (when it still has Python's
default one; it is put back when the last link closes). The handler raises
at once unless a link is at work on the main thread's stack, or when that
link waits in one of the calls marked :func:`interruptible` (each written so
an interrupt costs nothing: see ``_blockio``). Otherwise it notes the
interrupt: the link raises it at its next safe point
(:func:`deliver_deferred`), and if none comes within ``_RETRY`` seconds the
signal is sent again, to land wherever the thread is by then. trio protects
its own internals from KeyboardInterrupt in a similar way.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, TypeVar

__all__ = ("deferred", "deliver_deferred", "interruptible", "link_closed", "link_opened")

_F = TypeVar("_F", bound=Callable[..., Any])

#: A frame of these modules (``BlockingLink`` and its base classes) on the main
#: thread's stack means a link is at work there.
LINK_MODULES = frozenset({"ipcbus._blocking", "ipcbus._blockcall", "ipcbus._blockread"})
_INTERRUPTIBLE: set[CodeType] = set()
_MAIN = threading.main_thread().ident
_RETRY = 0.05  # seconds before a deferred interrupt is tried again

#: An interrupt noted in a link's bookkeeping, not raised yet (main thread only).
deferred = False
_resent = False  # a SIGINT of ours, retrying a deferred one, is on its way
_links = 0
_lock = threading.Lock()


def interruptible(fn: _F) -> _F:
    """Mark ``fn`` as a wait that Ctrl-C may interrupt at any point."""
    _INTERRUPTIBLE.add(fn.__code__)
    return fn


def deliver_deferred() -> None:
    """Raise the interrupt noted while a link could not take it, if this is the main thread."""
    global deferred
    if deferred and threading.get_ident() == _MAIN:
        deferred = False
        raise KeyboardInterrupt


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global deferred, _resent
    resent, _resent = _resent, False
    if resent and not deferred:
        return  # our retry of an interrupt that was raised meanwhile
    if _links == 0:  # left installed by a close from another thread: Python's again
        signal.signal(signal.SIGINT, signal.default_int_handler)
        deferred = False
        raise KeyboardInterrupt
    while frame is not None:
        if frame.f_code in _INTERRUPTIBLE:
            break  # a wait that an interrupt cannot tear
        if frame.f_globals.get("__name__") in LINK_MODULES:
            # The link is at work below whatever runs now (the core, a sink, a
            # logging handler): raised at its next safe point, or retried soon.
            deferred = True
            _retry_later()
            return
        frame = frame.f_back
    deferred = False
    raise KeyboardInterrupt


def _retry_later() -> None:
    """Send SIGINT again shortly, in case no safe point of the link raises it first.

    The backstop for every way out of a link that does not pass one (an
    exception, the last bytecodes of a call): a deferred interrupt is
    raised within ``_RETRY`` seconds of the link's bookkeeping ending.
    """
    timer = threading.Timer(_RETRY, _resend)
    timer.daemon = True
    timer.start()


def _resend() -> None:
    global _resent
    with _lock:
        if deferred:
            _resent = True
            os.kill(os.getpid(), signal.SIGINT)


def link_opened() -> bool:
    """A blocking link opened: take over SIGINT if it has Python's default handler.

    Returns whether this link counts (pass it to :func:`link_closed`).
    """
    global _links
    if threading.get_ident() != _MAIN:
        return False  # only the main thread may set handlers (and only it is interrupted)
    with _lock:
        if _links == 0:
            current = signal.getsignal(signal.SIGINT)
            if current is not _on_sigint:  # (ours: left by a close from another thread)
                if current is not signal.default_int_handler:
                    return False  # the program has its own: leave it be
                signal.signal(signal.SIGINT, _on_sigint)
        _links += 1
        return True


def link_closed(counted: bool) -> None:
    """A link closed: the last one counted puts Python's handler back.

    From another thread it cannot (only the main thread may set handlers):
    ours then stays, and acts as Python's does wherever no link is busy.
    """
    global _links
    if not counted:
        return
    with _lock:
        _links -= 1
        if (
            _links == 0
            and threading.get_ident() == _MAIN
            and signal.getsignal(signal.SIGINT) is _on_sigint
        ):
            signal.signal(signal.SIGINT, signal.default_int_handler)
