"""Calling the user's functions: listeners in order, handlers in their own cancel scope.

The ``Dispatcher`` decides what serves a call (and calls the commonest kind,
sync listeners of a message, itself, inline); these functions do the rest.

Listeners of one message are called in registration order; each one's
arguments are decoded for it (once for all untyped ones). One that raises is
logged (and fails a ``send_sync``'s reply), and the others still run.

An async ``invoke`` handler (or a sync one that returned an awaitable) and a
stream's async generator run in a task the ``Dispatcher`` scheduled, each in
a cancel scope kept in ``Dispatcher.scopes`` by request id: a Cancel from the
caller, or the connection ending, cancels it. Cancelled by our side
(shutdown) rather than by the caller, the handler's caller is told so.

Streams (docs/ports-and-streams.md): the generator's next item is pulled only
while the consumer has granted credit, so a slow consumer pauses the
generator. Items are queued for the writer (``flush_later``): a generator
that yields without awaiting fills the window, then one write sends it. A
stream waiting for credit does not count against ``max_in_flight``.

A callback fails with an ``Exception``, or with a ``CancelledError`` it
raised itself (``own_failure``): a coroutine that awaits a task someone else
cancelled raises one, and so may plain code. Nothing cancelled the task that
runs it, so it is that callback's failure, and goes where its other
exceptions go (its caller's ``RemoteError``, the log), never up into the
connection's or main's task group, which would take it as their own
cancellation.

Functions, not a class: they keep no state of their own (it is the
dispatcher's: ``scopes``, ``idle``), so a connection pays nothing for them
while idle.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._errors import ValidationError
from ._lograte import per_process
from ._registry import Callback
from ._values import ENCODE_ERRORS, encode_error
from ._wire import ErrorKind

if TYPE_CHECKING:
    from ._calls import ReplySlot
    from ._dispatch import Arguments, Dispatcher
    from ._messagedispatch import MessageDispatch

__all__ = (
    "PLAIN",
    "await_listeners",
    "call_listeners",
    "decode_for",
    "is_awaitable",
    "listener_failed",
    "own_failure",
    "run_listeners",
    "serve",
    "serve_awaitable",
    "serve_stream",
)

logger = logging.getLogger("ipcbus")
# Per process: a renderer can send what a listener cannot take, frame after frame.
_unfit = per_process(logger, "listeners not called for arguments that did not fit")
_failed = per_process(logger, "listener errors", burst=50)


def own_failure(exc: BaseException) -> bool:
    """Whether ``exc``, out of a user's callback, is that callback's failure.

    Any ``Exception``; and a ``CancelledError`` while nothing cancels the
    asyncio task running the callback (``Task.cancelling()`` is 0), or
    outside any task (a protocol callback), or on trio, which cancels with
    its own exception. A real cancellation, ``KeyboardInterrupt`` and the
    like are not: the caller re-raises them.
    """
    if isinstance(exc, Exception):
        return True
    if not isinstance(exc, asyncio.CancelledError):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return True  # not on asyncio: nothing here cancels with this exception
    return task is None or not task.cancelling()


_STREAM_CLOSE_GRACE = 5.0  # seconds a closing generator gets to clean up

#: Results that are never awaitable: checked first (inline, on the hot path), as
#: ``inspect.isawaitable`` costs an ABC check for every plain value returned.
PLAIN = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})


def is_awaitable(result: Any) -> bool:
    """Whether a callback's result must be awaited (plain values are ruled out first)."""
    return result is not None and type(result) not in PLAIN and inspect.isawaitable(result)


# ---- listeners: every one, in registration order --------------------------


def call_listeners(
    d: MessageDispatch,
    listeners: tuple[Callback, ...],
    event: Any,
    channel: str,
    raw: msgspec.Raw,
    slot: ReplySlot | None,
) -> None:
    """Call sync listeners now, in order; await what they returned in a task."""
    pending = []  # coroutines that plain callables returned
    for callback, arguments in _listener_calls(d, listeners, channel, raw, slot):
        result = _call_listener(d, callback, event, arguments, channel, slot)
        if result is not None:
            pending.append(result)
    if pending:
        d.schedule(await_listeners, d, pending, channel, slot)
    elif slot is not None:
        slot.set(None)


async def run_listeners(
    d: MessageDispatch,
    listeners: tuple[Callback, ...],
    event: Any,
    slot: ReplySlot | None,
    channel: str,
    raw: msgspec.Raw,
) -> None:
    """Call the listeners in order, each awaited before the next (some are async)."""
    for callback, args in _listener_calls(d, listeners, channel, raw, slot):
        if (result := _call_listener(d, callback, event, args, channel, slot)) is not None:
            try:
                await result
            except BaseException as exc:
                if not own_failure(exc):
                    raise
                listener_failed(d, channel, exc, slot)
    if slot is not None:
        slot.set(None)


def _call_listener(
    d: MessageDispatch,
    callback: Callback,
    event: Any,
    args: Arguments,
    channel: str,
    slot: ReplySlot | None,
) -> Awaitable[Any] | None:
    """Call one listener; what it returned if that must be awaited, else ``None``."""
    try:
        result = callback.fn(event, *args)
    except BaseException as exc:
        if not own_failure(exc):
            raise
        listener_failed(d, channel, exc, slot)
        return None
    return result if is_awaitable(result) else None


async def await_listeners(
    d: MessageDispatch, awaitables: list[Awaitable[Any]], channel: str, slot: ReplySlot | None
) -> None:
    for awaitable in awaitables:
        try:
            await awaitable
        except BaseException as exc:
            if not own_failure(exc):
                raise
            listener_failed(d, channel, exc, slot)
    if slot is not None:
        slot.set(None)


def _listener_calls(
    d: MessageDispatch,
    listeners: tuple[Callback, ...],
    channel: str,
    raw: msgspec.Raw,
    slot: ReplySlot | None,
) -> Iterator[tuple[Callback, Arguments]]:
    """Each listener with its decoded arguments; one that cannot take them is skipped.

    Arguments are decoded once for all untyped listeners, and once per
    typed listener against its own annotations.
    """
    shared: Arguments | None = None
    for callback in listeners:
        typed = callback.signature.typed
        if shared is None or typed:
            args = decode_for(callback, channel, raw, slot)
            if args is None:
                continue
            if not typed:
                shared = args
        else:
            args = shared
        yield callback, args


def decode_for(
    callback: Callback, channel: str, raw: msgspec.Raw, slot: ReplySlot | None = None
) -> Arguments | None:
    """``callback``'s arguments; ``None`` (logged, failed on ``slot``) if they do not fit.

    Both renderers and main decode a listener's arguments here
    (``ipcbus.sync``'s too, in ``_syncloop``).
    """
    try:
        return callback.signature.decode(channel, raw)
    except ValidationError as exc:
        _unfit.warning(
            "listener %r on %r not called: its arguments do not fit its annotations",
            callback.fn,
            channel,
        )
        logger.debug("listener %r on %r not called: %s", callback.fn, channel, exc)
        if slot is not None:
            slot.fail(ErrorKind.VALIDATION, exc)
        return None


def listener_failed(
    d: MessageDispatch, channel: str, exc: BaseException, slot: ReplySlot | None
) -> None:
    _failed.error("listener for %r from %s raised", channel, d.endpoint.name, exc_info=exc)
    if slot is not None:
        slot.fail(ErrorKind.REMOTE, exc)


# ---- invoke handlers and stream generators ---------------------------------


async def serve(
    d: Dispatcher,
    request_id: int,
    channel: str,
    callback: Callback,
    event: Any,
    args: Arguments,
) -> None:
    """Call an invoke's handler and reply with what it returns (awaited if need be)."""
    await _serve_call(d, request_id, channel, lambda: callback.fn(event, *args))


async def serve_awaitable(
    d: Dispatcher, request_id: int, channel: str, awaitable: Awaitable[Any]
) -> None:
    """Await what a sync invoke handler returned, and reply with it."""
    await _serve_call(d, request_id, channel, lambda: awaitable)


async def _serve_call(
    d: Dispatcher, request_id: int, channel: str, call: Callable[[], Any]
) -> None:
    if not d.conn.is_serving(request_id):
        return  # cancelled (or the connection ended) before we started
    with anyio.CancelScope() as scope:
        d.scopes[request_id] = scope
        if d.stopping:
            scope.cancel()  # main is shutting down: no new handler runs
        try:
            result = call()
            if is_awaitable(result):
                result = await result
        except BaseException as exc:
            if not own_failure(exc):
                raise
            d.calls.queue_error(request_id, ErrorKind.REMOTE, exc)
        else:
            d.calls.queue_reply(request_id, channel, result)
        finally:
            _forget(d, request_id)
    if scope.cancelled_caught and d.conn.is_serving(request_id):
        # Cancelled by our side (shutdown), not by the caller: say so.
        why = f"the handler for {channel!r} was cancelled before it replied"
        d.calls.queue_cancelled(request_id, why + "; the reply was never sent")
    await d.outbox.flush_quietly()


async def serve_stream(
    d: Dispatcher,
    request_id: int,
    channel: str,
    callback: Callback,
    event: Any,
    args: Arguments,
) -> None:
    """Run a stream's generator, sending each item as credit allows, then its end."""
    try:
        if not d.conn.is_serving(request_id):
            return  # cancelled (or the connection ended) before we started
        iterator: AsyncIterator[Any] | None = None
        with anyio.CancelScope() as scope:
            d.scopes[request_id] = scope
            if d.stopping:
                scope.cancel()
            try:
                iterator = await _open_iterator(callback.fn(event, *args), channel)
                await _pump_stream(d, request_id, channel, iterator)
            except BaseException as exc:
                if not own_failure(exc):
                    raise
                d.calls.queue_error(request_id, ErrorKind.REMOTE, exc)
            else:
                d.calls.queue_reply(request_id, channel, None)
            finally:
                if iterator is not None:
                    await _close_iterator(iterator, channel)
                _forget(d, request_id)
        if scope.cancelled_caught and d.conn.is_serving(request_id):
            d.calls.queue_cancelled(
                request_id, f"the generator for {channel!r} was cancelled before it finished"
            )
        await d.outbox.flush_quietly()
    finally:
        d.streams -= 1  # counted as the Dispatcher scheduled it


def _forget(d: Dispatcher, request_id: int) -> None:
    del d.scopes[request_id]
    if not d.scopes and d.idle is not None:
        d.idle.set()


async def _pump_stream(
    d: Dispatcher, request_id: int, channel: str, iterator: AsyncIterator[Any]
) -> None:
    conn = d.conn
    while True:
        while conn.stream_credit(request_id) < 1:
            if not conn.is_serving(request_id):
                return
            # Waiting for the consumer is not work: give back the in-flight
            # slot, or streams waiting for credit could stop the reader that
            # would bring it (max_in_flight).
            d.lend_slot()
            try:
                await d.calls.wait_credit(request_id)  # the generator stays paused
            finally:
                d.take_slot()
        try:
            item = await iterator.__anext__()
        except StopAsyncIteration:
            return
        try:
            if not conn.send_stream_item(request_id, item):
                return
        except ENCODE_ERRORS as exc:
            raise encode_error("yield a value", channel, item, exc, named="the item") from None
        outbox = d.outbox
        if outbox.congested:
            # Backpressure, as for send: credit is the consumer's to give, and a
            # window of a billion must not make main hold what the socket cannot
            # take (a peer that stops reading is dropped after send_timeout).
            await outbox.flush_quietly()
        else:
            outbox.flush_later()


async def _close_iterator(iterator: AsyncIterator[Any], channel: str) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    with anyio.move_on_after(_STREAM_CLOSE_GRACE, shield=True):
        try:
            await aclose()
        except BaseException as exc:
            if not own_failure(exc):
                raise
            logger.exception("closing the generator for %r raised", channel)


async def _open_iterator(result: Any, channel: str) -> AsyncIterator[Any]:
    """The async iterator a stream handler gave: an async generator, or awaited to one."""
    if not hasattr(result, "__aiter__") and inspect.isawaitable(result):
        result = await result
    if not hasattr(result, "__aiter__"):
        raise TypeError(
            f"the handler for {channel!r} returned {type(result).__name__}, not an async "
            "iterator; a stream is served by an async generator (async def with yield)"
        )
    iterator: AsyncIterator[Any] = result.__aiter__()
    return iterator
