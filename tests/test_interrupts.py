"""Where a Ctrl-C is raised while a blocking link is open (``ipcbus._interrupts``).

The end-to-end proof is tests/test_sync.py (hundreds of SIGINTs at a renderer
making large invokes); these pin down each decision of the handler.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

import pytest

from ipcbus import _interrupts


def _frame_in(module: str, caller: FrameType | None = None) -> FrameType:
    """A frame of a function whose module is ``module`` (called from ``caller``'s)."""
    namespace: dict[str, Any] = {"__name__": module, "sys": sys}
    exec("def f(): return sys._getframe()", namespace)
    frame: FrameType = namespace["f"]()
    if caller is not None:  # f_back cannot be set: stand one in
        return _Chained(frame, caller)  # type: ignore[return-value]
    return frame


class _Chained:
    """A frame seen through another ``f_back`` (what the handler reads, nothing more)."""

    def __init__(self, frame: FrameType, back: FrameType) -> None:
        self.f_globals = frame.f_globals
        self.f_code = frame.f_code
        self.f_back = back


@pytest.fixture(autouse=True)
def _nothing_deferred() -> Any:
    _interrupts.deferred = False
    yield
    _interrupts.deferred = False


def test_outside_ipcbus_a_ctrl_c_is_raised_at_once() -> None:
    with pytest.raises(KeyboardInterrupt):
        _interrupts._on_sigint(signal.SIGINT, _frame_in("__main__"))
    with pytest.raises(KeyboardInterrupt):
        _interrupts._on_sigint(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):  # ipcbus's own wrappers are the caller's side
        _interrupts._on_sigint(signal.SIGINT, _frame_in("ipcbus.sync"))


def test_in_the_links_bookkeeping_it_waits_for_the_next_safe_point() -> None:
    _interrupts._on_sigint(signal.SIGINT, _frame_in("ipcbus._blocking"))  # no raise
    assert _interrupts.deferred
    with pytest.raises(KeyboardInterrupt):
        _interrupts.deliver_deferred()
    assert not _interrupts.deferred
    _interrupts.deliver_deferred()  # once only


def test_stdlib_frames_are_judged_by_who_called_them() -> None:
    guarded = _frame_in("ipcbus._protocol")
    _interrupts._on_sigint(signal.SIGINT, _frame_in("threading", guarded))
    assert _interrupts.deferred
    _interrupts.deferred = False
    with pytest.raises(KeyboardInterrupt):  # a listener's logging call
        _interrupts._on_sigint(signal.SIGINT, _frame_in("logging", _frame_in("__main__")))


def test_a_wait_marked_interruptible_is_interrupted_at_once() -> None:
    namespace: dict[str, Any] = {"__name__": "ipcbus._blocking", "sys": sys}
    exec("def wait(): return sys._getframe()", namespace)
    wait = _interrupts.interruptible(namespace["wait"])
    try:
        with pytest.raises(KeyboardInterrupt):
            _interrupts._on_sigint(signal.SIGINT, wait())
        assert not _interrupts.deferred
    finally:
        _interrupts._INTERRUPTIBLE.discard(wait.__code__)


def test_the_handler_is_ours_only_while_links_are_open_and_only_in_place_of_pythons() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    first, second = _interrupts.link_opened(), _interrupts.link_opened()
    assert first and second
    assert signal.getsignal(signal.SIGINT) is _interrupts._on_sigint
    _interrupts.link_closed(first)
    assert signal.getsignal(signal.SIGINT) is _interrupts._on_sigint  # one still open
    _interrupts.link_closed(second)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def own(signum: int, frame: object) -> None: ...

    previous = signal.signal(signal.SIGINT, own)
    try:
        counted = _interrupts.link_opened()
        assert not counted
        assert signal.getsignal(signal.SIGINT) is own  # the program's own stays
        _interrupts.link_closed(counted)
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)
