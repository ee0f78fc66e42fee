"""The peer's messages and send_syncs on one connection: every listener, in registration order.

A base class of ``_dispatch.Dispatcher`` (whose own base is
``_admission.Admission``), so the reader's hot loop stays one object's
methods. ``_message_run`` is the fast path: a run of plain messages (no
gate, no ports) whose listeners are all sync, each decoded once and its
listeners called inline, one lookup per channel
(``benchmarks/dispatch_path.py --opcodes`` measures it). Everything else
about a message (ports, async listeners, a ``send_sync``'s reply slot, a
failed decoding) goes through ``_dispatch_message`` and ``_calling``. The
lookups (listeners and handlers by channel) are cached while no registry
changes (``Registry.changes``); ``Dispatcher._dispatch_call`` shares them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from . import _calling
from ._admission import Admission
from ._calling import PLAIN as _PLAIN
from ._calls import ReplySlot
from ._errors import NoHandlerError
from ._events import Event, MessageReceived
from ._registry import Callback, Registry, any_async, shared_decoder, single_argument
from ._values import DECODE_ERRORS
from ._wire import ErrorKind
from .ports import discard_ports

__all__ = ("EARLY_WRITE", "Lookup", "MessageDispatch")

logger = logging.getLogger("ipcbus")

EARLY_WRITE = 16  # in a read of more frames than this, replies leave every this many

#: A channel's listeners, their shared decoder, whether any is async, and the one
#: listener's function if it takes a single argument (``single_argument``).
Lookup = tuple[
    tuple[Callback, ...], Callable[[msgspec.Raw], Any] | None, bool, Callable[..., Any] | None
]


class MessageDispatch(Admission):
    """Calls the listeners of the peer's messages and send_syncs; keeps the lookups."""

    __slots__ = (
        "_event_sender",
        "_handlers_cache",
        "_listeners_cache",
        "_lookups_seen",
        "_message_event",
    )

    if TYPE_CHECKING:  # set by Dispatcher.__init__
        _message_event: Callable[[str, Any], Any]
        _event_sender: Any
        _listeners_cache: dict[str, Lookup]
        _handlers_cache: dict[str, Callback]
        _lookups_seen: int

    # -- messages and send_sync: every listener, in registration order

    def _message_run(self, events: Sequence[Event]) -> int:
        """Call the sync listeners of the plain messages that begin ``events``.

        Returns how many it took. It stops before the first event that is not
        such a message (or that needs more: ports, a failed decoding, an
        async listener, a full connection) and leaves it to the caller.
        """
        seen = Registry.changes
        if seen != self._lookups_seen:
            self._forget_lookups(seen)
        cache = self._listeners_cache
        make_event, sender = self._message_event, self._event_sender
        max_in_flight, conn, every = self._max_in_flight, self.conn, EARLY_WRITE
        if (
            conn.pending_output > self.output_bound
            or self.active >= max_in_flight
            or self.pending_starts
        ):
            return 0  # held back, or queued behind a task, by the general loop
        last: str | None = None
        listeners: tuple[Callback, ...] = ()
        decode: Callable[[msgspec.Raw], Any] | None = None
        taken = 0
        for event in events:
            if type(event) is not MessageReceived or event.ports or Registry.changes != seen:
                break
            channel = event.channel
            if channel != last:
                found = cache.get(channel)
                if found is None or found[1] is None:
                    # A channel not looked up yet (cached there) or with async
                    # listeners: the general way.
                    taken += 1
                    if self._one_message(event):
                        continue
                    break
                listeners, decode, _, one = found
                last = channel
            try:
                args = decode(event.args)  # type: ignore[misc]
            except DECODE_ERRORS:
                taken += 1  # the general way says why
                if self._one_message(event):
                    continue
                break
            message_event = make_event(channel, sender)
            pending: list[Awaitable[Any]] | None = None
            if one is not None:  # one listener of one argument: args is a 1-tuple
                try:
                    result = one(message_event, args[0])
                    if (
                        result is not None
                        and type(result) not in _PLAIN
                        and inspect.isawaitable(result)
                    ):
                        pending = [result]
                except BaseException as exc:
                    if not _calling.own_failure(exc):
                        raise
                    _calling.listener_failed(self, channel, exc, None)
            else:
                for callback in listeners:
                    try:
                        result = callback.fn(message_event, *args)
                        if (
                            result is not None
                            and type(result) not in _PLAIN
                            and inspect.isawaitable(result)
                        ):
                            (pending := pending or []).append(result)
                    except BaseException as exc:
                        if not _calling.own_failure(exc):
                            raise
                        _calling.listener_failed(self, channel, exc, None)
            taken += 1
            if pending:
                # Awaited in a task: what follows must not overtake it (pending_starts).
                self.schedule(_calling.await_listeners, self, pending, channel, None)
                break
            if not taken % every and conn.pending_output > self.output_bound:
                break  # listeners that send: the rest wait for the peer to read
        return taken

    def _dispatch_message(
        self,
        channel: str,
        raw: msgspec.Raw,
        request_id: int | None,
        ports: list[Any] | None = None,
    ) -> None:
        found = self._listeners_cache.get(channel)  # _listeners_of, inline for a hit
        if found is None or Registry.changes != self._lookups_seen:
            found = self._listeners_of(channel)
        listeners, _, any_async, _ = found
        if not listeners:
            if request_id is None:
                logger.debug(
                    "dropped a message on %r from %s: no listener", channel, self.endpoint.name
                )
                if ports:
                    discard_ports(ports)  # their peers learn that nobody took them
            else:
                self.calls.reply_error_soon(
                    request_id,
                    ErrorKind.NO_HANDLER,
                    NoHandlerError(f"No listeners registered for {channel!r}"),
                )
            return
        slot = None if request_id is None else ReplySlot(self.calls, request_id, channel)
        event = self._owner.make_event(channel, slot)
        if ports:
            event.ports = ports
        if self.pending_starts or any_async:
            self.schedule(_calling.run_listeners, self, listeners, event, slot, channel, raw)
        else:
            _calling.call_listeners(self, listeners, event, channel, raw, slot)

    def _one_message(self, event: MessageReceived) -> bool:
        """``_message_run``'s way out for one message; whether the run may go on."""
        self._dispatch_message(event.channel, event.args, None)
        return not self.pending_starts and self.active < self._max_in_flight

    # -- lookups, cached per channel while no registry changes

    def _listeners_of(self, channel: str) -> Lookup:
        """The listeners to call for one message on ``channel``, their shared decoder,
        and whether any is async.

        The shared decoder (a C call: ``Signature.fast_decode``) is there when the
        listeners are all sync and one decoding serves them all: every one is
        unannotated, or there is one, with a fixed number of arguments.

        Looked up once per channel while no registry changes (one dict lookup
        per message instead of two registries' and a scan for async ones).
        """
        changes = Registry.changes
        if changes != self._lookups_seen:
            self._forget_lookups(changes)
        found = self._listeners_cache.get(channel)
        if found is None:
            listeners = self._owner.find_listeners(channel)
            found = (
                listeners,
                shared_decoder(listeners),
                any_async(listeners),
                single_argument(listeners),
            )
            # Only channels with listeners (a peer's made-up channels must not
            # fill it), and only if taking them removed no `once` listener.
            if listeners and Registry.changes == changes:
                self._listeners_cache[channel] = found
        return found

    def _forget_lookups(self, changes: int) -> None:
        self._listeners_cache.clear()
        self._handlers_cache.clear()
        self._lookups_seen = changes
