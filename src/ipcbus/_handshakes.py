"""Handshake deadlines: one task ends main's connections that show no token in time.

A task per new connection, sleeping until its ``handshake_timeout`` with a
cancel scope of its own, more than doubled what a connection costs main
until it shows the token: 71 objects tracked by the cycle collector against
33 now (60 connections that say nothing, on asyncio), and such connections
are what a hostile peer makes. Here a connection's deadline is one entry in
a dict, which keeps the order they came in: every deadline is
``handshake_timeout`` after its connection began, so the first entry is
always the one due first, and one task sleeps until it. An entry leaves as
its handshake completes or its connection ends (``Link._handshake_over``);
with none left, the task ends too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ._states import State
from ._wire import CloseCode

if TYPE_CHECKING:
    from ._serving import Link
    from .main import IpcMain

__all__ = ("HandshakeDeadlines",)


class HandshakeDeadlines:
    """The connections of one ``IpcMain`` still in their handshake, and when each is due."""

    __slots__ = ("_due", "_main", "_running", "_sleep")

    def __init__(self, main: IpcMain) -> None:
        self._main = main
        self._due: dict[Link, float] = {}  # in the order they came: the first is due first
        self._running = False
        self._sleep: anyio.CancelScope | None = None  # the task's wait for the first

    def __len__(self) -> int:
        return len(self._due)

    def watch(self, link: Link, task_group: anyio.abc.TaskGroup) -> None:
        """End ``link``'s connection unless its handshake is over within the timeout."""
        self._due[link] = anyio.current_time() + self._main.handshake_timeout
        if not self._running:
            self._running = True
            task_group.start_soon(self._sweep, task_group)

    def forget(self, link: Link) -> None:
        """``link``'s handshake is over (or its connection ended): no deadline any more."""
        if self._due.pop(link, None) is not None and not self._due and self._sleep is not None:
            self._sleep.cancel()  # nothing left to wait for: the task ends now

    async def _sweep(self, task_group: anyio.abc.TaskGroup) -> None:
        due = self._due
        try:
            while due:
                link = next(iter(due))
                delay = due[link] - anyio.current_time()
                if delay > 0:
                    with anyio.CancelScope() as self._sleep:
                        await anyio.sleep(delay)
                    self._sleep = None
                    continue
                del due[link]
                endpoint = link.contents._endpoint
                if endpoint is not None and endpoint.conn.state is State.HANDSHAKE:
                    task_group.start_soon(
                        endpoint.close,
                        CloseCode.PROTOCOL_ERROR,
                        f"no handshake within {self._main.handshake_timeout} s",
                    )
        finally:
            self._running = False
            self._sleep = None
