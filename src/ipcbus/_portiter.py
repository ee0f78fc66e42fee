"""``async for message_event in port``: an iterator over a port's messages."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import anyio

from ._portparts import Close, Item, MessageEvent, Relayed

if TYPE_CHECKING:
    from .ports import MessagePortMain

__all__ = ("PortIterator",)


class PortIterator:
    """``async for message_event in port``.

    Without ``"message"`` listeners an iterator takes messages straight from
    the port's inbox (several iterators share them); with listeners, every
    iterator also gets a copy of what they get.
    """

    __slots__ = ("__weakref__", "_done", "_port", "_queue", "_wake")

    def __init__(self, port: MessagePortMain) -> None:
        self._port = port
        self._queue: deque[MessageEvent | Close] = deque()
        self._wake: anyio.Event | None = None
        self._done = False

    def push(self, event: MessageEvent | Close) -> None:
        self._queue.append(event)
        self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def __aiter__(self) -> PortIterator:
        return self

    async def __anext__(self) -> MessageEvent:
        port = self._port
        while True:
            if self._queue:
                event = self._queue.popleft()
                if isinstance(event, Close):
                    self._done = True
                    raise StopAsyncIteration
                return event
            if self._done or port._close_emitted or port._neutered:
                raise StopAsyncIteration
            inbox = port._inbox
            if port._started and inbox and not port._draining:
                head = inbox[0]
                if isinstance(head, Item) and not port._listeners.get("message"):
                    inbox.popleft()
                    if type(head) is Relayed and head.parked:
                        port._took(head)
                    port._schedule()  # a "close" behind it must still be emitted
                    return MessageEvent(head.data, head.ports)
                if port._host is None and port._deliverable():
                    await port._drain()  # nobody else will: deliver from this task
                    continue
            self._wake = anyio.Event()
            try:
                await self._wake.wait()
            finally:
                self._wake = None
