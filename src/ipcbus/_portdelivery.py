"""A message port's delivery: its inbox, and the task that hands it to listeners.

A base class of ``ports.MessagePortMain`` (over ``_portlifetime.PortLifetime``),
so a message's way from ``_enqueue`` to a listener stays one object's
methods. What arrives for an end is queued in its inbox (``_enqueue``,
``_queue``), or handed to plain listeners at once when a connection's reader
delivers it and nothing is ahead (``_deliver_inline``). ``_schedule`` wakes
``async for`` and, when listeners have work (``_deliverable``), starts one
delivery task (``_drain``) in the port's owner or on the running loop
(``_start_soon``); ``_delivery_check`` starts another if that one was
cancelled before it began. ``"close"`` is emitted once, last (``_emit_close``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any

from ._calling import own_failure
from ._loop import asyncio_callback_context, start_on_loop, trio_running
from ._portlifetime import PortLifetime, close_ports_in
from ._portparts import CLOSE, Close, Item, MessageEvent, Queued, Relayed

if TYPE_CHECKING:
    from ._portparts import PortHost

__all__ = ("Listener", "PortDelivery")

logger = logging.getLogger("ipcbus")

Listener = tuple[Callable[..., Any], bool, bool]  # fn, once, async


class PortDelivery(PortLifetime):
    """An end's inbox and its delivery task: what arrived, handed on in order."""

    if TYPE_CHECKING:  # set by MessagePortMain.__init__ (the rest: PortLifetime)
        _host: PortHost | None
        _started: bool
        _draining: bool | Coroutine[Any, Any, None]

    # ---- internals: delivery -------------------------------------------

    def _enqueue(self, item: Queued, inline: bool = False) -> bool:
        """Add what arrived for this end; delivery follows if it can.

        ``inline``: the item came off the wire and the caller is a connection's
        reader, which may run plain listeners right here (as it does for
        ``on(channel)`` listeners) instead of in a task, when that keeps order.
        Returns whether a message was queued in the inbox (not delivered at
        once, nor dropped).
        """
        if self._neutered:
            close_ports_in([item])
            return False
        if isinstance(item, Close):
            if self._hear_close():  # (both ends closed at once: one close is enough)
                self._schedule()
            return False
        if self._closed:  # after "close" nothing more is delivered
            close_ports_in([item])
            return False
        if inline and self._deliver_inline(item):
            return False
        self._queue(item)
        self._schedule()
        return True

    def _queue(self, item: Queued) -> None:
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = deque()
        inbox.append(item)

    def _deliver_inline(self, item: Item) -> bool:
        """Deliver ``item`` now if nothing is ahead of it and no listener is async."""
        listeners = self._listeners.get("message")
        if self._inbox or self._draining or not self._started or not listeners:
            return False
        once = False
        for _, is_once, is_async in listeners:
            if is_async:
                return False
            once = once or is_once
        if once:
            self._listeners["message"] = tuple(entry for entry in listeners if not entry[1])
        event = MessageEvent(item.data, item.ports)
        if self._iterators:
            for iterator in list(self._iterators):
                iterator.push(event)
        for fn, _, _ in listeners:
            try:
                result = fn(event)
            except BaseException as exc:
                if not own_failure(exc):
                    raise
                logger.exception("a MessagePortMain listener %r raised", fn)
                continue
            if inspect.isawaitable(result):
                self._start_soon(partial(_call, lambda r=result: r))
        return True

    def _deliverable(self) -> bool:
        """Whether the drain has work: CLOSE, or a message for ``"message"`` listeners.

        Without listeners, messages wait in the inbox for ``async for`` to take
        them one at a time, so an iterator left early loses nothing.
        """
        inbox = self._inbox
        if not inbox:
            return False
        if inbox[0] is CLOSE:
            return self._started or self._closed_here
        if self._started and not self._iterators and inbox[-1] is CLOSE:
            # Closed, and nobody reads messages here: like Electron, the ones
            # still queued are dropped and "close" is emitted; it must not
            # wait forever behind them (SPEC 4: closing emits "close" on both).
            return True
        return self._started and bool(self._listeners.get("message"))

    def _schedule(self) -> None:
        if not self._inbox:
            return
        if self._iterators:  # (a WeakSet: iterating it costs more than the rest)
            for iterator in list(self._iterators):
                iterator.wake()  # it may take the message, or drain if there is no host
        if self._draining or not self._deliverable():
            return
        if self._start_soon(self._delivery):
            self._check_delivery_soon()
        else:
            self._draining = False

    def _check_delivery_soon(self) -> None:
        """Queue ``_delivery_check`` for a delivery task that has not started yet."""
        coro = self._draining
        if (
            coro is True
            or coro is False
            or inspect.getcoroutinestate(coro) != inspect.CORO_CREATED  # eager: it ran
            or trio_running()  # trio (guest mode too): trio starts every task it spawns
        ):
            return
        with suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(
                self._delivery_check, coro, context=asyncio_callback_context()
            )

    def _delivery(self) -> Coroutine[Any, Any, None]:
        """The delivery task's coroutine, kept until it runs: don't start a second."""
        coro = self._drain()
        self._draining = coro
        return coro

    def _delivery_check(self, coro: Coroutine[Any, Any, None]) -> None:
        """After the delivery task's first step: did it start ``_drain``?

        Code that cancels every other task (a shutdown helper) may cancel it
        before that step: then none of ``_drain`` runs, not even the
        ``finally`` that says it is over, and this port would wait for it for
        ever. A loop callback, queued after the task's first step, which no
        such code can cancel, finds its coroutine still here (closed; or never
        started, in anyio's wrapper, which starts it in that first step) and
        starts another delivery.
        """
        if self._draining is not coro:
            return  # it ran (and maybe another delivery is on its way: not ours to judge)
        coro.close()  # never started: no "never awaited" warning for it
        self._draining = False
        self._schedule()

    def _start_soon(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``fn`` in a task of the port's owner, else of the running event loop."""
        host = self._host
        if host is not None:
            if host.start_soon(fn):
                return True
            # anyio may have called fn, then failed (anyio >= 4.14 outside a task, on
            # asyncio.run): that coroutine is no task's, close it
            draining = self._draining
            if (
                draining is not True
                and draining is not False
                and inspect.getcoroutinestate(draining) == inspect.CORO_CREATED
            ):
                draining.close()
                self._draining = False
        return start_on_loop(fn)

    async def _drain(self) -> None:
        self._draining = True
        try:
            while self._deliverable():
                inbox = self._inbox
                assert inbox  # _deliverable: something is queued
                item = inbox.popleft()
                if type(item) is Relayed and item.parked:
                    self._took(item)
                if isinstance(item, Close):
                    await self._emit_close()
                    break
                event = MessageEvent(item.data, item.ports)
                if self._iterators:
                    for iterator in list(self._iterators):
                        iterator.push(event)  # with listeners, iterators get copies
                for fn, _, _ in self._take("message"):
                    await _call(fn, event)
        finally:
            self._draining = False
            if self._inbox:
                for iterator in list(self._iterators):
                    iterator.wake()  # the listeners went away: iterators take over

    def _took(self, item: Relayed) -> None:
        """A message that counted against its sender left the inbox (``Relayed``)."""
        router = self._router
        if router is not None:  # else closed, and it counts no more
            router.took(self._wire, item)

    async def _emit_close(self) -> None:
        if self._close_emitted:
            return
        self._close_emitted = True
        for iterator in list(self._iterators):
            iterator.push(CLOSE)
        for fn, _, _ in self._take("close"):
            await _call(fn)

    def _take(self, event: str) -> tuple[Listener, ...]:
        """The listeners of ``event`` for one delivery; the ``once`` ones are removed."""
        current = self._listeners.get(event, ())
        if any(entry[1] for entry in current):
            self._listeners[event] = tuple(entry for entry in current if not entry[1])
        return current


async def _call(fn: Callable[..., Any], *args: Any) -> None:
    try:
        result = fn(*args)
        if inspect.isawaitable(result):
            await result
    except BaseException as exc:
        if not own_failure(exc):
            raise
        logger.exception("a MessagePortMain listener %r raised", fn)
