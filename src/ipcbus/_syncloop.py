"""The blocking renderer's loop thread: what main sends, handed over and run there.

``ipcbus.sync.IpcRenderer`` reads its socket in the calling thread or its
reader thread (``_blocking``), which hands each read's events here
(``_post``). They are run on an asyncio loop in a background thread (an
anyio blocking portal that ``connect`` starts): listeners one at a time in
the order main sent them, a task for each of main's ``contents.invoke``
(plain handlers in a worker thread, ``in_worker_thread``), cancelled when
main cancels or the connection ends.

``LoopSide`` is a base class of ``sync.IpcRenderer``, so these stay its
methods; the state they use (the registry, the link, the loop and its
inbox, the running handlers' scopes) is set by that class.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread

from ._admission import BACKLOG_LIMIT, READ_AHEAD_BYTES, held_size
from ._calling import decode_for, is_awaitable, own_failure
from ._errors import NoHandlerError, ValidationError
from ._events import ConnectionTerminated, Event, MessageReceived, RequestCancelled, RequestReceived
from ._wire import INVOKE, ErrorKind
from .renderer import IpcRendererEvent

if TYPE_CHECKING:
    from ._blocking import BlockingLink
    from ._registry import Callback, Registry

__all__ = ("LoopSide", "in_worker_thread", "loop_identity")

logger = logging.getLogger("ipcbus")

RECHECK = 0.02  # seconds between looks at the bound while the reading waits for room

F = TypeVar("F", bound=Callable[..., Any])


def _size(event: Event) -> int:
    """What a call or message costs against ``READ_AHEAD_BYTES`` (``held_size``); else 0."""
    if type(event) is MessageReceived or type(event) is RequestReceived:
        return held_size(event)
    return 0


class LoopSide:
    """What main sends to a blocking renderer, run on its loop's thread."""

    if TYPE_CHECKING:  # set by sync.IpcRenderer
        max_in_flight: int
        _registry: Registry
        _link: BlockingLink | None
        _loop: asyncio.AbstractEventLoop | None
        _inbox: asyncio.Queue[list[Event]] | None
        _scopes: dict[int, anyio.CancelScope]

    # What main sent and the loop has not taken up yet (a message not yet
    # delivered, a call whose handler has not started) is bounded, as the
    # async renderer's backlog is (``_admission``): past ``max_in_flight``
    # events and ``READ_AHEAD_BYTES`` of their channels and arguments, or past
    # ``BACKLOG_LIMIT`` events, the reading thread waits for room before it
    # hands on more, so it stops reading and main's sends wait, instead of
    # our memory growing with whatever main sends. Not at ``max_in_flight``
    # alone: main's Cancel of a running handler may come next, and unread it
    # would leave that handler holding its slot for good. While a caller
    # waits for its own reply only ``BACKLOG_LIMIT`` counts: the handlers
    # running may be the very ones waiting for replies that only a read can bring.
    _room: threading.Condition
    _queued = 0  # events handed to the loop and not yet taken up
    _queued_bytes = 0  # their channels' and arguments' bytes (``held_size``)
    _posting = False  # the loop takes events (between connect and close)

    def _start_posting(self) -> None:
        with self._room:
            self._queued = self._queued_bytes = 0
            self._posting = True

    def _stop_posting(self) -> None:
        """Closing: a reading thread waiting for room goes, handing on nothing more."""
        with self._room:
            self._posting = False
            self._room.notify_all()

    def _post(self, events: list[Event]) -> None:
        """Hand one read's events to the loop, in order (called by the reading thread)."""
        loop, inbox = self._loop, self._inbox
        if loop is None or inbox is None:
            return
        room = self._room
        with room:
            while self._posting and self._full():
                # Woken as the loop takes events up; and, every RECHECK seconds,
                # to see whether a call now waits for a reply: this thread leads
                # the reading, so that call's reply would wait for it (a call
                # starting does not notify: that would cost every call).
                room.wait(RECHECK)
            if not self._posting:
                return  # closing: the loop stops, and nothing would take these
            self._queued += len(events)
            self._queued_bytes += sum(map(_size, events))
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, events)
        except RuntimeError:  # the loop has stopped: we are closing
            pass

    def _full(self) -> bool:
        """Whether the reading thread must wait before it hands on more (above)."""
        queued = self._queued
        if queued >= BACKLOG_LIMIT:
            return True
        link = self._link
        return (
            queued >= self.max_in_flight
            and self._queued_bytes >= READ_AHEAD_BYTES
            and not (link is not None and link.awaiting_replies())
        )

    def _taken(self, event: Event) -> None:
        """``event`` was taken up by the loop (delivered, or its handler started)."""
        room = self._room
        with room:
            self._queued -= 1
            self._queued_bytes -= _size(event)
            room.notify()

    async def _dispatch_events(
        self, *, task_status: anyio.abc.TaskStatus[asyncio.Queue[list[Event]]]
    ) -> None:
        """The loop's one task: listeners in order; a task per call main makes."""
        inbox: asyncio.Queue[list[Event]] = asyncio.Queue()
        limiter = anyio.CapacityLimiter(self.max_in_flight)
        async with anyio.create_task_group() as tg:
            task_status.started(inbox)
            while True:
                for event in await inbox.get():
                    if type(event) is MessageReceived:
                        try:
                            await self._deliver(event)
                        finally:
                            self._taken(event)
                        continue
                    if type(event) is RequestReceived:
                        tg.start_soon(self._serve, event, limiter)  # _serve calls _taken
                        continue
                    self._taken(event)
                    if isinstance(event, RequestCancelled):
                        if (scope := self._scopes.get(event.request_id)) is not None:
                            scope.cancel()
                    elif isinstance(event, ConnectionTerminated):
                        for scope in self._scopes.values():
                            scope.cancel()  # nobody can receive their replies any more
                    # Port frames: the ports were closed on arrival (_deliver).

    async def _deliver(self, message: MessageReceived) -> None:
        channel = message.channel
        if message.ports and (link := self._link) is not None:
            logger.warning(
                "ipcbus.sync.IpcRenderer takes no message ports: closed the %d sent on %r "
                "(use the async ipcbus.IpcRenderer for ports)",
                len(message.ports),
                channel,
            )
            link.close_ports(list(message.ports))
        listeners = self._registry.take_listeners(channel)
        if not listeners:
            logger.debug("dropped a message on %r from main: no listener", channel)
            return
        event = IpcRendererEvent(channel, self)  # type: ignore[arg-type]
        for callback in listeners:
            args = decode_for(callback, channel, message.args)
            if args is None:  # logged
                continue
            try:
                result = callback.fn(event, *args)
                if is_awaitable(result):
                    await result
            except BaseException as exc:
                if not own_failure(exc):
                    raise
                logger.error("listener for %r from main raised", channel, exc_info=exc)

    async def _serve(self, request: RequestReceived, limiter: anyio.CapacityLimiter) -> None:
        """Answer main's ``contents.invoke`` with what the handler returns or raises.

        It waits for room (counts in ``_queued``) until its handler starts.
        """
        link = self._link
        ready = None if link is None else self._ready(request, link)
        if link is None or ready is None:
            self._taken(request)
            return
        callback, args = ready
        channel, request_id = request.channel, request.request_id
        event = IpcRendererEvent(channel, self)  # type: ignore[arg-type]
        started = False
        with anyio.CancelScope() as scope:  # main's Cancel: the core has answered it
            self._scopes[request_id] = scope
            try:
                async with limiter:
                    started = True
                    self._taken(request)
                    if not link.wants_reply(request_id):
                        # Main's Cancel came first: read with this call (the
                        # reading goes on while calls wait for room), handled
                        # before this task registered its scope.
                        return
                    result = callback.fn(event, *args)
                    if is_awaitable(result):
                        result = await result
            except BaseException as exc:
                if not own_failure(exc):
                    raise
                link.reply_error(request_id, ErrorKind.REMOTE, exc)
            else:
                link.reply(request_id, channel, result)
            finally:
                del self._scopes[request_id]
                if not started:
                    self._taken(request)  # cancelled while it waited for the limiter

    def _ready(self, request: RequestReceived, link: BlockingLink) -> tuple[Callback, Any] | None:
        """The handler of ``request`` and its arguments; ``None`` if answered with an error."""
        channel, request_id = request.channel, request.request_id
        callback = self._registry.take_handler(channel) if request.kind is INVOKE else None
        if callback is None:
            why = (
                f"No handler registered for {channel!r}"
                if request.kind is INVOKE
                else f"ipcbus.sync.IpcRenderer serves no streams ({channel!r}): "
                "use the async ipcbus.IpcRenderer"
            )
            link.reply_error(request_id, ErrorKind.NO_HANDLER, NoHandlerError(why))
            return None
        try:
            return callback, callback.signature.decode(channel, request.args)
        except ValidationError as exc:
            link.reply_error(request_id, ErrorKind.VALIDATION, exc)
            return None


def loop_identity() -> tuple[int, asyncio.AbstractEventLoop]:
    """The loop thread's id and its asyncio loop."""
    return threading.get_ident(), asyncio.get_running_loop()


def in_worker_thread(fn: F) -> F:
    """``fn`` as an async function that runs it in a worker thread; async ones as they are."""
    if (
        not callable(fn)  # the registry says why
        or inspect.iscoroutinefunction(fn)
        or inspect.isasyncgenfunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    ):
        return fn

    @functools.wraps(fn)  # keeps the annotations the arguments are converted by
    async def in_worker(*args: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    return in_worker  # type: ignore[return-value]
