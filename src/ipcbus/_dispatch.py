"""The peer's calls on one connection: admission, lookup, decoding, calling, replying.

Admission and dispatch are one object because the reader's hot loop reads
both per frame (``dispatch_batch``); admission's half is a base class in
``_admission``. Rules:

* Callbacks are *called* in the order their messages arrived. Sync callbacks
  run inline in the reader; async ones in a task of the connection's task
  group (``_calling``). While any such task has been scheduled but not yet
  started (``pending_starts``), sync callbacks are scheduled behind it instead
  of run inline, so they cannot overtake it.
* At most ``max_in_flight`` async callbacks run at once; the rest wait in
  order, and reading pauses while full (``_admission`` has the rules).
* An optional ``gate`` (main sets it: allowlists, guards) sees every message
  and request before anything decodes its arguments; it dispatches it now,
  later (``dispatch``), or never. Every call goes through ``admit`` (ports
  landed, gate asked, then ``dispatch``) except the one measured fast path in
  ``dispatch_batch``: a message with no gate and no ports.
* Replies: an invoke gets its handler's result or error; a ``send_sync`` gets
  the first ``event.return_value`` (``ReplySlot``), else ``None``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from . import _calling
from ._admission import MAX_PENDING_OUTPUT, Admission
from ._calling import PLAIN as _PLAIN
from ._calls import Calls, ReplySlot
from ._errors import NoHandlerError, ValidationError
from ._events import Event, MessageReceived, ReplyReceived, RequestReceived
from ._outbox import Outbox
from ._protocol import Connection
from ._registry import Callback, Registry, any_async, shared_decoder, single_argument
from ._values import DECODE_ERRORS
from ._wire import STREAM, ErrorKind, RequestKind
from .ports import discard_ports

if TYPE_CHECKING:
    from ._endpoint import Endpoint
    from ._owner import Gate, Owner

__all__ = ("Dispatcher",)

logger = logging.getLogger("ipcbus")

INVOKE = RequestKind.INVOKE  # a module global: an Enum member lookup costs more
_EARLY_WRITE = 16  # in a read of more frames than this, replies leave every this many

Arguments = list[Any] | tuple[Any, ...]
#: A channel's listeners, their shared decoder, whether any is async, and the one
#: listener's function if it takes a single argument (``single_argument``).
_Lookup = tuple[
    tuple[Callback, ...], Callable[[msgspec.Raw], Any] | None, bool, Callable[..., Any] | None
]


class Dispatcher(Admission):
    """Admits the peer's calls, finds what serves them, calls it, queues the answer."""

    __slots__ = (
        "_event_sender",
        "_handlers_cache",
        "_invoke_event",
        "_listeners_cache",
        "_lookups_seen",
        "_message_event",
        "gate",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        conn: Connection,
        owner: Owner,
        outbox: Outbox,
        calls: Calls,
        *,
        new_event: Callable[[], anyio.Event],
        max_in_flight: int,
    ) -> None:
        super().__init__(
            endpoint, conn, owner, outbox, calls, new_event=new_event, max_in_flight=max_in_flight
        )
        self._message_event = owner._message_event
        self._invoke_event = owner._invoke_event
        self._event_sender = owner._event_sender
        self.gate: Gate | None = None
        # Lookups by channel, valid while Registry.changes is _lookups_seen.
        self._listeners_cache: dict[str, _Lookup] = {}
        self._handlers_cache: dict[str, Callback] = {}
        self._lookups_seen = -1

    # ---- the reader's hot loop -------------------------------------------

    def dispatch_batch(self, events: list[Event]) -> None:
        """Dispatch one read's events in order, holding calls back while full."""
        backlog = self._backlog
        if not events:
            return
        first = events[0]
        if type(first) is ReplyReceived and len(events) == 1:
            # A read of one reply (a caller's every read while it waits for it):
            # Calls.replied, inline
            waiter = self.calls.waiters.get(first.request_id)
            if waiter is not None and not waiter.done():  # a future: not cancelled
                waiter.set_result(first)
            return
        if type(first) is RequestReceived and len(events) == 1:
            # A read of one call (main's every read while each renderer waits
            # for its reply): the general loop's work for it, without its setup.
            if (
                first.kind is INVOKE
                and self.gate is None
                and not backlog
                and self.active < self._max_in_flight
                and self.conn.pending_output <= MAX_PENDING_OUTPUT
            ):
                self._dispatch_call(first)
                return
        elif type(first) is ReplyReceived:
            # A read that starts with replies to our calls (a caller's every read):
            # each wakes its caller, with none of the general loop's bookkeeping.
            waiters = self.calls.waiters
            taken = 0
            for event in events:
                if type(event) is not ReplyReceived:
                    break
                # Calls.replied, inline (once per reply)
                waiter = waiters.get(event.request_id)
                if waiter is not None and not waiter.done():  # a future: not cancelled
                    waiter.set_result(event)
                taken += 1
            if taken == len(events):
                return
            events = events[taken:]
        elif type(first) is MessageReceived and self.gate is None and not backlog:
            # A read that starts with messages (a stream of sends: all of it)
            taken = self._message_run(events)
            if taken == len(events):
                return
            if taken:
                events = events[taken:]
        conn = self.conn
        early = self.outbox.direct is not None and len(events) > _EARLY_WRITE
        congested = conn.pending_output > MAX_PENDING_OUTPUT  # checked every few calls
        countdown = _EARLY_WRITE
        for event in events:
            if type(event) is MessageReceived:
                # not (backlog or self._full()), inline: this runs once per frame
                if backlog or congested or self.active >= self._max_in_flight:
                    self._hold(event)
                    continue
                if self.gate is None and not event.ports:
                    # No gate to ask, no ports to land: a run of one (0 if it must
                    # queue behind a task, which the general way does).
                    if not self._message_run((event,)):
                        self._dispatch_message(event.channel, event.args, None)
                else:
                    self.admit(event)
            elif type(event) is RequestReceived:
                if backlog or congested or self.active >= self._max_in_flight:
                    self._hold(event)
                    continue
                if self.gate is None and event.kind is INVOKE:
                    self._dispatch_call(event)  # admit() and dispatch(), inline
                else:
                    self.admit(event)
            elif type(event) is ReplyReceived:
                self.calls.replied(event)  # Endpoint.handle's first case, inline
                continue
            else:
                self.endpoint.handle(event)
                continue
            countdown -= 1
            if not countdown:
                countdown = _EARLY_WRITE
                if early and conn.pending_output:
                    # A long read: send the replies made so far, so the peer works
                    # on them while we make the rest (both sides busy at once).
                    self.outbox.write_at_once()
                congested = conn.pending_output > MAX_PENDING_OUTPUT

    # ---- dispatch ------------------------------------------------------

    def admit(self, event: MessageReceived | RequestReceived) -> None:
        """Land a message's ports, ask the gate, and dispatch if it lets the call through."""
        ports = None
        if type(event) is MessageReceived and event.ports:
            # Ports are landed on arrival (or were, if the call was held back):
            # frames that follow may name them.
            ports = self._landed.pop(id(event), None)
            if ports is None:
                ports = self._owner.receive_ports(event.ports)
        if self.gate is None or self.gate(event, ports):
            self.dispatch(event, ports)

    def dispatch(self, event: RequestReceived | MessageReceived, ports: list[Any] | None) -> None:
        """Call what serves ``event`` (the gate, if any, has let it through)."""
        if isinstance(event, MessageReceived):
            # A plain message let through by a guard: a run of one, as in dispatch_batch.
            if ports or not self._message_run((event,)):
                self._dispatch_message(event.channel, event.args, None, ports)
        elif event.kind is not RequestKind.SYNC:
            self._dispatch_call(event)  # invoke or stream
        else:
            self._dispatch_message(event.channel, event.args, event.request_id)

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
        max_in_flight, conn, every = self._max_in_flight, self.conn, _EARLY_WRITE
        if (
            conn.pending_output > MAX_PENDING_OUTPUT
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
                except Exception as exc:
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
                    except Exception as exc:
                        _calling.listener_failed(self, channel, exc, None)
            taken += 1
            if pending:
                # Awaited in a task: what follows must not overtake it (pending_starts).
                self.schedule(_calling.await_listeners, self, pending, channel, None)
                break
            if not taken % every and conn.pending_output > MAX_PENDING_OUTPUT:
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

    def _listeners_of(self, channel: str) -> _Lookup:
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

    # -- invoke and stream: the one handler

    def _dispatch_call(self, event: RequestReceived) -> None:
        """Serve an invoke or a stream: find its handler, decode its arguments, call it.

        A sync handler of an invoke runs here and its reply is queued; the
        rest (async handlers, awaitables, streams) run in a task. No handler,
        or arguments that do not fit its annotations: an error reply.
        """
        channel, request_id = event.channel, event.request_id
        # The handler, cached like listeners (valid while Registry.changes stays)
        changes = Registry.changes
        if changes != self._lookups_seen:
            self._forget_lookups(changes)
        callback = self._handlers_cache.get(channel)
        if callback is None:
            callback = self._owner.find_handler(channel)
            if callback is None:
                self.calls.reply_error_soon(
                    request_id,
                    ErrorKind.NO_HANDLER,
                    NoHandlerError(f"No handler registered for {channel!r}"),
                )
                return
            if Registry.changes == changes:  # not a handle_once
                self._handlers_cache[channel] = callback
        signature = callback.signature
        try:
            if (fast := signature.fast_decode) is not None:
                try:
                    args = fast(event.args)  # one C call when the arguments fit
                except DECODE_ERRORS:
                    args = signature.decode(channel, event.args)  # raises, saying why
            else:
                args = signature.decode(channel, event.args)
        except ValidationError as exc:
            self.calls.reply_error_soon(request_id, ErrorKind.VALIDATION, exc)
            return
        call_event = self._invoke_event(channel, self._event_sender)
        if event.kind is STREAM:
            self.schedule(
                _calling.serve_stream, self, request_id, channel, callback, call_event, args
            )
            return
        if callback.is_async or self.pending_starts:
            self.schedule(_calling.serve, self, request_id, channel, callback, call_event, args)
            return
        try:
            if callback.one and type(args) is tuple:  # see Callback.one
                result = callback.fn(call_event, args[0])
            else:
                result = callback.fn(call_event, *args)
        except Exception as exc:
            self.calls.reply_error_soon(request_id, ErrorKind.REMOTE, exc)
            return
        # is_awaitable, inline (plain values are ruled out without a call)
        if result is not None and type(result) not in _PLAIN and inspect.isawaitable(result):
            self.schedule(_calling.serve_awaitable, self, request_id, channel, result)
        elif self.calls.queue_reply(request_id, channel, result):  # Calls.reply_soon, inline
            self.outbox.kick()
