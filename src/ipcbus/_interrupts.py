"""Ctrl-C in a blocking call, delivered only where it cannot tear a link's state apart.

Python runs a signal handler in the main thread between two bytecodes,
wherever that thread is: with ``KeyboardInterrupt`` raised there, a blocking
link (``_blocking``) could lose a read it had taken from the socket, stop
half-way through a frame, or leave a lock held and a leader flag set, and the
next call would misread the stream or wait forever. So while a blocking link
is open, SIGINT gets this module's handler (when it still has Python's
default one; it is put back when the last link closes). The handler raises
at once when the main thread is outside ipcbus (in the caller's code, or a
listener's) or waiting in one of the calls marked :func:`interruptible`
(each written so an interrupt costs nothing: see ``_blockio``);
anywhere else in the link or the core it drives it notes the interrupt, and the link raises it at
the next safe point (:func:`deliver_deferred`). trio protects its own
internals from KeyboardInterrupt the same way.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, TypeVar

__all__ = ("deferred", "deliver_deferred", "interruptible", "link_closed", "link_opened")

_F = TypeVar("_F", bound=Callable[..., Any])

#: The blocking link and the sans-I/O core it drives: where an interrupt must wait.
#: The rest of ipcbus (``sync``'s wrappers, the async side) counts as the caller's.
#: By module name, not file: a frame's file is where its code was compiled.
_GUARDED = frozenset(
    f"ipcbus.{name}"
    for name in (
        "_blocking",
        "_blockio",
        "_protocol",
        "_framing",
        "_framestream",
        "_wire",
        "_values",
        "_events",
        "_errors",
    )
)
_STDLIB = sys.stdlib_module_names
_INTERRUPTIBLE: set[CodeType] = set()
_MAIN = threading.main_thread().ident

#: An interrupt noted in ipcbus's bookkeeping, not raised yet (main thread only).
deferred = False
_links = 0
_lock = threading.Lock()


def interruptible(fn: _F) -> _F:
    """Mark ``fn`` as a wait that Ctrl-C may interrupt at any point."""
    _INTERRUPTIBLE.add(fn.__code__)
    return fn


def deliver_deferred() -> None:
    """Raise the interrupt noted while ipcbus could not take it, if this is the main thread."""
    global deferred
    if deferred and threading.get_ident() == _MAIN:
        deferred = False
        raise KeyboardInterrupt


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global deferred
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module in _GUARDED:
            if frame.f_code in _INTERRUPTIBLE:
                break
            deferred = True  # ipcbus's own state is mid-change: raised at a safe point
            return
        if module.partition(".")[0] not in _STDLIB:
            break  # the caller's code, or a listener's
        frame = frame.f_back  # threading, ssl, logging...: who called them decides
    deferred = False
    raise KeyboardInterrupt


def link_opened() -> bool:
    """A blocking link opened: take over SIGINT if it has Python's default handler.

    Returns whether this link counts (pass it to :func:`link_closed`).
    """
    global _links
    if threading.get_ident() != _MAIN:
        return False  # only the main thread may set handlers (and only it is interrupted)
    with _lock:
        if _links == 0:
            if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
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
