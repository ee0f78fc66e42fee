"""Where a Ctrl-C is raised while a blocking link is open (``ipcbus._interrupts``).

The end-to-end proof is tests/test_sync.py (hundreds of SIGINTs at a renderer
making large invokes); these pin down each decision of the handler.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from ipcbus import _interrupts


@pytest.fixture(autouse=True)
def pythons_handler() -> Iterator[None]:
    """Python's own SIGINT handler in place, as in a program started from a shell.

    A process started with SIGINT ignored (a background job of a shell
    without job control) has none; ipcbus then leaves SIGINT alone, and
    these tests are about what it does in place of Python's.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
def _nothing_deferred(monkeypatch: pytest.MonkeyPatch) -> Any:
    retries: list[None] = []
    # No real SIGINT at this test process: record the retries instead.
    monkeypatch.setattr(_interrupts, "_retry_later", lambda: retries.append(None))
    monkeypatch.setattr(_interrupts, "_links", 1)  # as while a link is open
    _interrupts.deferred = False
    yield retries
    _interrupts.deferred = False


def test_outside_a_link_a_ctrl_c_is_raised_at_once() -> None:
    with pytest.raises(KeyboardInterrupt):
        _interrupts._on_sigint(signal.SIGINT, _frame_in("__main__"))
    with pytest.raises(KeyboardInterrupt):
        _interrupts._on_sigint(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):  # the core, used by an async endpoint
        _interrupts._on_sigint(signal.SIGINT, _frame_in("ipcbus._protocol"))


def test_in_a_links_bookkeeping_it_waits_for_the_next_safe_point(
    _nothing_deferred: list[None],
) -> None:
    _interrupts._on_sigint(signal.SIGINT, _frame_in("ipcbus._blocking"))  # no raise
    assert _interrupts.deferred
    assert len(_nothing_deferred) == 1  # and a retry is on its way
    with pytest.raises(KeyboardInterrupt):
        _interrupts.deliver_deferred()
    assert not _interrupts.deferred
    _interrupts.deliver_deferred()  # once only


def test_every_room_of_a_link_holds_an_interrupt_off() -> None:
    """``BlockingLink`` is cut into base classes in their own modules: a frame of
    any of them is a link at work (a room left out would let Ctrl-C tear it)."""
    from ipcbus._blocking import BlockingLink

    rooms = {cls.__module__ for cls in BlockingLink.__mro__ if cls is not object}
    assert rooms == _interrupts.LINK_MODULES
    for module in sorted(rooms):
        _interrupts.deferred = False
        _interrupts._on_sigint(signal.SIGINT, _frame_in(module))  # no raise
        assert _interrupts.deferred, module


def test_whatever_runs_on_top_of_a_link_waits_too() -> None:
    """The core, a sink, a logging handler: the link below is mid-change."""
    link = _frame_in("ipcbus._blocking")
    for module in ("ipcbus._protocol", "ipcbus.sync", "threading", "some_logging_handler"):
        _interrupts.deferred = False
        _interrupts._on_sigint(signal.SIGINT, _frame_in(module, link))
        assert _interrupts.deferred, module


def test_the_retry_of_an_interrupt_already_raised_is_dropped() -> None:
    _interrupts._on_sigint(signal.SIGINT, _frame_in("ipcbus._blocking"))
    with pytest.raises(KeyboardInterrupt):
        _interrupts.deliver_deferred()
    _interrupts._resent = True  # its retry arrives after all
    _interrupts._on_sigint(signal.SIGINT, _frame_in("__main__"))  # no second interrupt
    with pytest.raises(KeyboardInterrupt):  # the next Ctrl-C is one again
        _interrupts._on_sigint(signal.SIGINT, _frame_in("__main__"))


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


def test_the_handler_is_ours_only_while_links_are_open_and_only_in_place_of_pythons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_interrupts, "_links", 0)
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


def test_a_handler_left_behind_by_a_close_elsewhere_gives_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last link closed from another thread could not put Python's handler
    back; the next link adopts ours, and the next Ctrl-C without a link restores it."""
    monkeypatch.setattr(_interrupts, "_links", 0)
    signal.signal(signal.SIGINT, _interrupts._on_sigint)  # as left behind
    try:
        counted = _interrupts.link_opened()
        assert counted  # adopted, so its close puts Python's back
        _interrupts.link_closed(counted)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, _interrupts._on_sigint)  # left behind again
        with pytest.raises(KeyboardInterrupt):
            _interrupts._on_sigint(signal.SIGINT, _frame_in("ipcbus._blocking"))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_an_ignored_sigint_stays_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process started with SIGINT ignored (``nohup``, a background job) keeps it so."""
    monkeypatch.setattr(_interrupts, "_links", 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    counted = _interrupts.link_opened()
    assert not counted
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    _interrupts.link_closed(counted)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
