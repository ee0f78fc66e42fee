"""Main's central checks (SPEC section 9): channel allowlists, then guards.

A :class:`Gatekeeper` is an ``Endpoint.gate``: it sees every message and
request a renderer sends, before anything decodes its arguments.

* A channel outside ``IpcMain(allowed_channels=...)`` or the renderer's own
  allowlist (``spawn``/``listen(..., allowed_channels=...)``) is rejected.
* Then each guard runs, in registration order, with an event that carries
  the channel and the sender (never the arguments). A guard that raises
  rejects the message.
* Rejected: an invoke, send_sync or stream caller gets ``RemoteError``
  carrying the exception (``PermissionError`` for an allowlist); a send or
  post_message is dropped, logged, and the ports it carried are closed.

Order is kept: with only plain guards, everything is decided inline; once a
guard is async (or returns an awaitable), that message and every later one
from the same renderer wait in a queue served by one task, in arrival order.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ._calling import own_failure
from ._endpoint import Endpoint, logger
from ._events import MessageReceived, RequestReceived
from ._lograte import per_process
from ._registry import Callback
from ._wire import ErrorKind
from .ports import discard_ports

__all__ = ("Gatekeeper", "Guards")

Checked = RequestReceived | MessageReceived


# Per process: a renderer can send call after call that a guard or allowlist refuses.
_rejected = per_process(logger, "calls rejected by guards or allowlists")


class _Pending:
    __slots__ = ("awaitable", "event", "guard_event", "guards", "index", "ports")

    def __init__(
        self,
        event: Checked,
        ports: list[Any] | None,
        guards: tuple[Callback, ...],
        guard_event: Any,
    ) -> None:
        self.event = event
        self.ports = ports
        self.guards = guards
        self.guard_event = guard_event
        self.index = 0
        self.awaitable: Awaitable[Any] | None = None


class Guards:
    """The guards of one ``IpcMain``, shared with the gate of every connection.

    ``callbacks`` is replaced, never changed in place, on every registration,
    so a gate reads it once per message as its snapshot.
    """

    __slots__ = ("callbacks",)

    def __init__(self) -> None:
        self.callbacks: tuple[Callback, ...] = ()


class Gatekeeper:
    """The gate of one renderer's connection.

    Args:
        endpoint: the connection.
        allowed: whether a channel passes the allowlists; ``None``: there are none.
        guards: the guards (read per message).
        guard_event: builds the event a guard receives.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        allowed: Callable[[str], bool] | None,
        guards: Guards,
        guard_event: Callable[[Checked, list[Any] | None], Any],
    ) -> None:
        self._endpoint = endpoint
        self._allowed = allowed
        self._guards = guards
        self._guard_event = guard_event
        self._queue: deque[_Pending] = deque()

    def __call__(self, event: Checked, ports: list[Any] | None) -> bool:
        if self._allowed is not None and not self._allowed(event.channel):
            self._reject(
                event,
                ports,
                PermissionError(
                    f"channel {event.channel!r} is not allowed for {self._endpoint.name} "
                    "(see allowed_channels)"
                ),
            )
            return False
        guards = self._guards.callbacks
        if not guards and not self._queue:
            return True
        pending = _Pending(event, ports, guards, self._guard_event(event, ports))
        if self._queue:  # an earlier message still waits for an async guard
            self._defer(pending)
            return False
        verdict = self._run_inline(pending)
        if verdict is None:
            self._defer(pending)
            return False
        return verdict

    def _run_inline(self, pending: _Pending) -> bool | None:
        """``True``: passed; ``False``: rejected; ``None``: a guard must be awaited."""
        while pending.index < len(pending.guards):
            guard = pending.guards[pending.index]
            if guard.is_async:
                return None
            pending.index += 1
            try:
                result = guard.fn(pending.guard_event)
            except BaseException as exc:
                if not own_failure(exc):
                    raise
                self._reject(pending.event, pending.ports, exc)
                return False
            if inspect.isawaitable(result):
                pending.awaitable = result
                return None
        return True

    def _defer(self, pending: _Pending) -> None:
        self._queue.append(pending)
        if len(self._queue) == 1:
            self._endpoint.start_soon(self._work)

    async def _work(self) -> None:
        while self._queue:
            pending = self._queue[0]
            try:
                await self._run_async(pending)
            except BaseException as exc:
                if not own_failure(exc):
                    raise
                self._reject(pending.event, pending.ports, exc)
            else:
                self._endpoint.dispatcher.dispatch(pending.event, pending.ports)
            finally:
                self._queue.popleft()

    async def _run_async(self, pending: _Pending) -> None:
        if pending.awaitable is not None:
            awaitable, pending.awaitable = pending.awaitable, None
            await awaitable
        while pending.index < len(pending.guards):
            guard = pending.guards[pending.index]
            pending.index += 1
            result = guard.fn(pending.guard_event)
            if inspect.isawaitable(result):
                await result

    def _reject(self, event: Checked, ports: list[Any] | None, exc: BaseException) -> None:
        _rejected.warning(
            "rejected %s on %r from %s: %s: %s",
            "a request" if isinstance(event, RequestReceived) else "a message",
            event.channel,
            self._endpoint.name,
            type(exc).__name__,
            exc,
        )
        if isinstance(event, RequestReceived):
            self._endpoint.calls.reply_error_soon(event.request_id, ErrorKind.REMOTE, exc)
        if ports:
            discard_ports(ports)  # their peers learn that nobody took them
