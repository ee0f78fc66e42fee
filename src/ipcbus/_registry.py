"""Listener and handler registration, shared by main, WebContents and renderers.

Listeners are kept per channel as an immutable tuple, replaced on every
change. A dispatch reads the tuple once, so it is its own snapshot: a listener
removed while a message is being dispatched still runs for that message
(SPEC section 2), and dispatch never copies a list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar, overload

import msgspec

from ._errors import HandlerExistsError
from ._values import Signature, decode_argument_list

__all__ = (
    "Callback",
    "Registry",
    "any_async",
    "channel_set",
    "check_channel",
    "shared_decoder",
    "single_argument",
)

F = TypeVar("F", bound=Callable[..., Any])


def check_channel(channel: object) -> str:
    """Return ``channel`` if it is a non-empty ``str``; raise otherwise."""
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, not {type(channel).__name__}")
    if not channel:
        raise ValueError("channel must be a non-empty str")
    return channel


def channel_set(channels: Iterable[str] | None) -> frozenset[str] | None:
    """``allowed_channels`` as given by the user: checked, as a set; ``None`` for all."""
    if channels is None:
        return None
    if isinstance(channels, str):
        raise TypeError("allowed_channels must be a collection of channel names, not a str")
    return frozenset(check_channel(channel) for channel in channels)


class Callback:
    """A registered listener or handler, with what dispatch needs to know."""

    __slots__ = ("fn", "is_async", "once", "one", "signature")

    def __init__(self, fn: Callable[..., Any], once: bool) -> None:
        if not callable(fn):
            raise TypeError(f"listener must be callable, not {type(fn).__name__}")
        self.fn = fn
        self.once = once
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with async __call__
        )
        self.signature = Signature(fn)
        #: Sync, of exactly one argument, which ``signature.fast_decode`` always
        #: gives as a 1-tuple: dispatch calls it as ``fn(event, args[0])`` when
        #: that decoder made ``args`` (a tuple). ``fn(event, *args)`` costs a
        #: tuple and a call through C, about 150 ns of a 700 ns message.
        self.one = (
            not self.is_async
            and self.signature.arity == 1
            and self.signature.fast_decode is not None
        )


class Registry:
    """``on``/``once``/``off``/``handle``... for one scope (SPEC sections 2 and 3)."""

    #: Bumped by every change to any registry's listeners or handlers, so that
    #: a cache of lookups (the endpoint's) knows when it is out of date.
    changes: ClassVar[int] = 0

    def __init__(self) -> None:
        self._listeners: dict[str, tuple[Callback, ...]] = {}
        self._once: set[str] = set()  # channels with a ``once`` listener: dispatch checks this
        self._handlers: dict[str, Callback] = {}

    # ---- listeners -----------------------------------------------------

    @overload
    def on(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def on(self, channel: str, listener: F) -> F: ...
    def on(self, channel: str, listener: F | None = None) -> F | Callable[[F], F]:
        """Listen to ``channel``: ``listener(event, *args)`` runs for each message.

        Works as a call, ``on("ch", fn)``, and as a decorator, ``@on("ch")``;
        both return ``fn``.
        """
        return self._register(channel, listener, once=False)

    @overload
    def once(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def once(self, channel: str, listener: F) -> F: ...
    def once(self, channel: str, listener: F | None = None) -> F | Callable[[F], F]:
        """As :meth:`on`, but the listener is removed before its first call."""
        return self._register(channel, listener, once=True)

    def off(self, channel: str, listener: Callable[..., Any]) -> None:
        """Remove the most recent registration of ``listener`` on ``channel``, if any."""
        current = self._listeners.get(channel, ())
        for i in range(len(current) - 1, -1, -1):
            if current[i].fn == listener:
                self._set_listeners(channel, current[:i] + current[i + 1 :])
                return

    remove_listener = off

    def remove_all_listeners(self, channel: str | None = None) -> None:
        """Remove every listener of ``channel``, or of every channel if ``None``."""
        Registry.changes += 1
        if channel is None:
            self._listeners.clear()
            self._once.clear()
        else:
            self._listeners.pop(channel, None)
            self._once.discard(channel)

    def listener_count(self, channel: str) -> int:
        """Number of listeners registered on ``channel``."""
        return len(self._listeners.get(channel, ()))

    def listeners(self, channel: str) -> list[Callable[..., Any]]:
        """The listeners of ``channel``, in the order they run."""
        return [cb.fn for cb in self._listeners.get(channel, ())]

    def event_names(self) -> list[str]:
        """Channels with at least one listener."""
        return list(self._listeners)

    # ---- handlers ------------------------------------------------------

    @overload
    def handle(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def handle(self, channel: str, handler: F) -> F: ...
    def handle(self, channel: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Serve ``invoke(channel, ...)``: the handler's return value is the result.

        Raises:
            HandlerExistsError: ``channel`` already has a handler.
        """
        return self._register_handler(channel, handler, once=False)

    @overload
    def handle_once(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def handle_once(self, channel: str, handler: F) -> F: ...
    def handle_once(self, channel: str, handler: F | None = None) -> F | Callable[[F], F]:
        """As :meth:`handle`, but removed before its first call."""
        return self._register_handler(channel, handler, once=True)

    def remove_handler(self, channel: str) -> None:
        """Remove the handler of ``channel``; no error if there is none."""
        Registry.changes += 1
        self._handlers.pop(channel, None)

    # ---- for dispatch --------------------------------------------------

    def take_listeners(self, channel: str) -> tuple[Callback, ...]:
        """The listeners to run for one message; ``once`` ones are removed first."""
        current = self._listeners.get(channel, ())
        if channel in self._once:
            self._set_listeners(channel, tuple(cb for cb in current if not cb.once))
        return current

    def take_handler(self, channel: str) -> Callback | None:
        """The handler to run for one invoke; a ``handle_once`` one is removed first."""
        callback = self._handlers.get(channel)
        if callback is not None and callback.once:
            Registry.changes += 1
            del self._handlers[channel]
        return callback

    # ---- internals -----------------------------------------------------

    def _set_listeners(self, channel: str, listeners: tuple[Callback, ...]) -> None:
        Registry.changes += 1
        if listeners:
            self._listeners[channel] = listeners
        else:
            self._listeners.pop(channel, None)
        if any(cb.once for cb in listeners):
            self._once.add(channel)
        else:
            self._once.discard(channel)

    def _register(self, channel: str, listener: F | None, once: bool) -> F | Callable[[F], F]:
        check_channel(channel)

        def register(fn: F) -> F:
            self._set_listeners(channel, (*self._listeners.get(channel, ()), Callback(fn, once)))
            return fn

        return register if listener is None else register(listener)

    def _register_handler(
        self, channel: str, handler: F | None, once: bool
    ) -> F | Callable[[F], F]:
        check_channel(channel)

        def register(fn: F) -> F:
            if channel in self._handlers:
                raise HandlerExistsError(f"Attempted to register a second handler for {channel!r}")
            Registry.changes += 1
            self._handlers[channel] = Callback(fn, once)
            return fn

        return register if handler is None else register(handler)


def single_argument(callbacks: tuple[Callback, ...]) -> Callable[..., Any] | None:
    """The function of the one callback in ``callbacks`` if it is :attr:`Callback.one`."""
    if len(callbacks) == 1 and callbacks[0].one:
        return callbacks[0].fn
    return None


def any_async(callbacks: tuple[Callback, ...]) -> bool:
    for callback in callbacks:
        if callback.is_async:
            return True
    return False


def shared_decoder(callbacks: tuple[Callback, ...]) -> Callable[[msgspec.Raw], Any] | None:
    """One C call that decodes the arguments for all of ``callbacks`` (none if they differ)."""
    if not callbacks or any(callback.is_async for callback in callbacks):
        return None
    if len(callbacks) == 1:
        return callbacks[0].signature.fast_decode
    if any(callback.signature.typed for callback in callbacks):
        return None
    return decode_argument_list
