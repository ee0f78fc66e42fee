"""Handshake deadlines: one task ends main's connections that show no token in time.

A task per new connection, sleeping until its ``handshake_timeout`` with a
cancel scope of its own, more than doubled what a connection costs main
until it shows the token: 71 objects tracked by the cycle collector against
33 now (60 connections that say nothing, on asyncio), and such connections
are what a hostile peer makes. Here a connection's deadline is one entry in
a dict, which keeps the order they came in: every deadline is
``handshake_timeout`` after its connection began, so the first entry is
the one due first, and one task sleeps until it. (Unless the timeout was
lowered while connections waited: then the earliest is looked for, and a
new deadline earlier than the one slept toward wakes the task.) An entry
leaves as its handshake completes or its connection ends
(``Link._handshake_over``). With none left the task waits, with no timer,
for the next connection: it starts with main's first connection and ends
with main. (It used to end whenever none was left, and so, with renderers
arriving one after another, a task was started for nearly every
connection again: about 4 % of main's CPU in taking 1,000 connections.)
A timeout of ``None`` or infinity sets no deadline, as ``move_on_after``
would.

A NATS replica's renderers that have been answered but have not spoken
yet (``_natsreplica._Unheard``) wait here too: whatever is watched says
what ending it means (``Awaited.handshake_expired``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc

if TYPE_CHECKING:
    from .main import IpcMain

__all__ = ("Awaited", "HandshakeDeadlines")


class Awaited(Protocol):
    """What waits for its handshake: a connection's ``Link``, or a renderer a NATS
    replica has answered that has not spoken yet (``_natsreplica._Unheard``)."""

    def __hash__(self) -> int: ...

    def handshake_expired(self, reason: str) -> None:
        """Its time is up: end it, saying ``reason`` (without waiting)."""


class HandshakeDeadlines:
    """What of one ``IpcMain`` is still in its handshake, and when each is due."""

    __slots__ = ("_arrived", "_due", "_last", "_main", "_ordered", "_running", "_sleep", "_waking")

    def __init__(self, main: IpcMain) -> None:
        self._main = main
        self._due: dict[Awaited, float] = {}  # in the order they came
        self._ordered = True  # deadlines in that order too: the first is due first
        self._last = -math.inf  # the latest deadline set
        self._running = False
        self._sleep: anyio.CancelScope | None = None  # the task's wait for the earliest...
        self._waking = math.inf  # ...which is due then
        self._arrived: anyio.Event | None = None  # set for an idle task: one has come

    def __len__(self) -> int:
        return len(self._due)

    def watch(self, link: Awaited, task_group: anyio.abc.TaskGroup) -> None:
        """End ``link`` unless its handshake is over within the timeout."""
        timeout = self._main.handshake_timeout
        if timeout is None or timeout == math.inf:
            return  # no deadline
        deadline = anyio.current_time() + timeout
        if deadline < self._last:
            self._ordered = False  # the timeout was lowered: look for the earliest
        self._last = deadline
        self._due[link] = deadline
        if not self._running:
            self._running = True
            task_group.start_soon(self._sweep)
        elif self._arrived is not None:
            self._arrived.set()  # the task was idle: it has a deadline to sleep toward
        elif deadline < self._waking and self._sleep is not None:
            self._sleep.cancel()  # due before the one slept toward

    def forget(self, link: Awaited) -> None:
        """``link``'s handshake is over (or its connection ended): no deadline any more."""
        if self._due.pop(link, None) is not None and not self._due:
            self._ordered, self._last = True, -math.inf
            if self._sleep is not None:
                self._sleep.cancel()  # nothing left to wait for: no timer while idle

    async def _sweep(self) -> None:
        due = self._due
        try:
            while True:
                if not due:
                    self._waking = math.inf
                    self._arrived = arrived = anyio.Event()
                    try:
                        await arrived.wait()  # no timer: the next connection sets it
                    finally:
                        self._arrived = None
                    continue
                delay = self._drop_due()
                if delay > 0:
                    with anyio.CancelScope() as self._sleep:
                        await anyio.sleep(delay)
                    self._sleep = None
        finally:
            self._running = False
            self._sleep = None
            self._waking = math.inf
            if not due:
                self._ordered, self._last = True, -math.inf

    def _drop_due(self) -> float:
        """End the earliest connection if it is due; else how long until it is.

        A method of its own, so that no link stays in the task's locals while it
        waits (an idle task would keep the last renderer's objects alive).
        """
        due = self._due
        link = next(iter(due)) if self._ordered else min(due, key=due.__getitem__)
        self._waking = due[link]
        delay = self._waking - anyio.current_time()
        if delay > 0:
            return delay
        del due[link]
        link.handshake_expired(f"no handshake within {self._main.handshake_timeout} s")
        return 0.0
