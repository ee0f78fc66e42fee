"""Message ports: ``MessageChannelMain`` and ``MessagePortMain`` (SPEC section 4).

A channel is two entangled ends. What one end posts, the other receives, in
order, until either end closes; then both see ``"close"``. The same classes
serve main and renderers (Electron's renderer-side ``MessagePort`` has the
same shape).

Where the messages go (docs/ports-and-streams.md has the long form):

* Both ends in one process and never sent anywhere: the message is handed to
  the other end directly; no socket is involved.
* An end that travels (``post_message(..., transfer=[port])`` on a
  ``WebContents``, an ``IpcRenderer`` or another port) is *neutered* in the
  sender and reappears as a fresh object at the receiver (``event.ports``).
  From then on the pair is routed by main: a renderer's end sends its
  messages to main, which delivers them to the other end wherever it lives
  (in main, or forwarded to the renderer holding it). Two renderers holding
  the two ends therefore talk through main: one extra hop, no decoding of the
  payload in main.

Lifetime, as in Electron (and Blink): an end that is started and whose
channel is open could still receive messages, so it is kept alive (pinned in
its loop's ``LoopHold``, for as long as the loop lives) even if no code
refers to it. Any other end lives only as long as something refers to it; one
that is collected while its channel is open closes it, and the other end
hears ``"close"``. Neither end refers to the other strongly.

``post_message``, ``start`` and ``close`` are plain methods, like Electron's:
they queue and return. Delivery (listeners, ``async for``) runs in a task of
the ``IpcMain`` or connected ``IpcRenderer`` that owns the port: the one the
port arrived through, or the one running when the channel was created. A
port with no such owner (a channel made in a plain coroutine, or whose owner
has stopped) delivers in tasks of the running event loop (``ipcbus._loop``),
on asyncio and trio alike; with no event loop at all, ``start()`` raises.

``MessagePortMain`` keeps the API, listeners and travelling here; its base
classes hold its delivery (``_portdelivery``) and lifetime (``_portlifetime``).
"""

from __future__ import annotations

import inspect
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from collections.abc import Set as AbstractSet
from typing import Any, Literal, TypeVar, overload

import msgspec

from ._errors import SerializationError
from ._loop import LoopHold, loop_is_running
from ._portdelivery import Listener, PortDelivery
from ._portiter import PortIterator
from ._portlifetime import close_ports_in as close_ports_in
from ._portlifetime import discard_ports as discard_ports
from ._portlifetime import living as living
from ._portparts import CLOSE, Item, MessageEvent, Queued, Router, current_host
from ._values import ENCODE_ERRORS, unencodable
from ._wire import MAX_PORTS_PER_FRAME

__all__ = ("MessageChannelMain", "MessageEvent", "MessagePortMain")

# close_ports_in, discard_ports and living are _portlifetime's; the routers and
# endpoints import them from here (hence "as").

# Defined with the parts the routers share, public here: reprs, pickles and
# help() name it ipcbus.ports.MessageEvent, as before the split.
MessageEvent.__module__ = __name__

F = TypeVar("F", bound=Callable[..., Any])
PortEvent = Literal["message", "close"]

_encoder = msgspec.msgpack.Encoder()
_ENCODE_ERRORS = ENCODE_ERRORS


class MessagePortMain(PortDelivery):
    """One end of a :class:`MessageChannelMain` (Electron's ``MessagePortMain``).

    Get one from a ``MessageChannelMain`` or from ``event.ports``.
    """

    def __init__(self) -> None:
        self._router: Router | None = None  # routed: the pair's traffic goes through it
        self._wire = 0  # this end's id in its router
        # Direct: the other end, same process. Weak: an end nobody can reach is
        # collected. It is the other end's own ``_self`` (see ``_weak``).
        self._pair: weakref.ref[MessagePortMain] | None = None
        self._self: weakref.ref[MessagePortMain] | None = None
        self._host = current_host.get()
        # Made by the first item queued: a deque is 760 bytes, most of an idle port.
        self._inbox: deque[Queued] | None = None
        self._listeners: dict[str, tuple[Listener, ...]] = {}
        # Made by the first ``async for`` (a WeakSet is 880 bytes, most ports never
        # have one); empty until then.
        self._iterators: AbstractSet[PortIterator] = frozenset()
        self._started = False
        self._hold: LoopHold | None = None  # pinned there while started and open (_pin)
        # Who holds this end after ``_move`` (weak: the old object may be kept by
        # its sender's code, and must not keep the new one alive).
        self._successor: weakref.ref[MessagePortMain] | None = None
        self._closed = False  # no more posting; CLOSE is queued or delivered
        self._closed_here = False  # close() was called on this end: deliver even unstarted
        self._close_emitted = False
        self._neutered = False
        # A delivery task: False (none), its coroutine (on its way), True (at work).
        self._draining: bool | Coroutine[Any, Any, None] = False
        self._received = 0  # frames main sent to this end that we read (renderer side)

    # ---- the Electron API ----------------------------------------------

    def post_message(self, message: Any, transfer: Iterable[MessagePortMain] = ()) -> None:
        """Send ``message`` to the other end, with the ports in ``transfer``.

        Returns at once; the message is delivered in order after the ones
        posted before it. Posting on a closed port does nothing.

        Raises:
            TypeError: a bad ``transfer`` (the message names the index): not
                a port, this port itself, its other end, a duplicate, or an
                already transferred port.
            SerializationError: ``message`` cannot be encoded; nothing is
                sent and no port is transferred.
            FrameTooLargeError: the other end is across a connection whose
                peer's ``max_frame_size`` the message could be over; nothing
                is sent and no port is transferred. (A message main relays
                between two renderers that is over the second one's limit is
                dropped there, with a warning on the ``ipcbus`` logger.)
        """
        ports = check_transfer(transfer, self, self._router)
        if self._closed or self._neutered:
            return
        data = encode_message(message)
        if self._router is not None:
            self._router.post(self, data, ports)
        elif (peer := self._other_end()) is not None:
            peer._enqueue(Item(data, [port._move() for port in ports]))
        else:
            self._pair_check()  # the other end was collected: this one is closed

    def start(self) -> None:
        """Start delivering messages; the ones that arrived before are kept until now.

        Raises:
            RuntimeError: no event loop runs in this thread, so nothing could
                ever deliver (call it from a coroutine or a listener).
        """
        if not self._neutered and not self._started:
            _require_loop("start")
            self._started = True
            self._pair_check()  # the other end may have been collected meanwhile
            self._pin()
            self._schedule()

    def close(self) -> None:
        """Close this end: both ends emit ``"close"``; undelivered messages are dropped."""
        if self._shut():
            self._schedule()

    @overload
    def on(self, event: PortEvent) -> Callable[[F], F]: ...
    @overload
    def on(self, event: PortEvent, listener: F) -> F: ...
    def on(self, event: PortEvent, listener: F | None = None) -> F | Callable[[F], F]:
        """Call ``listener(message_event)`` per message, or ``listener()`` on ``"close"``.

        Works as a call and as a decorator; returns ``listener``. Listeners
        may be ``async``: each finishes before the next message is delivered.
        ``"message"`` listeners start receiving once :meth:`start` is called.
        Listeners run on the event loop's thread, in a task of the port's
        owner (``IpcMain`` or connected ``IpcRenderer``) or, if it has none,
        of the running loop itself.

        Raises:
            RuntimeError: the port is started and no event loop runs in this
                thread (register listeners before ``start()``, anywhere).
        """
        return self._add(event, listener, once=False)

    @overload
    def once(self, event: PortEvent) -> Callable[[F], F]: ...
    @overload
    def once(self, event: PortEvent, listener: F) -> F: ...
    def once(self, event: PortEvent, listener: F | None = None) -> F | Callable[[F], F]:
        """As :meth:`on`, removed before its first call."""
        return self._add(event, listener, once=True)

    def off(self, event: PortEvent, listener: Callable[..., Any]) -> None:
        """Remove the most recent registration of ``listener`` for ``event``."""
        current = self._listeners.get(event, ())
        for i in range(len(current) - 1, -1, -1):
            if current[i][0] == listener:
                self._listeners[event] = current[:i] + current[i + 1 :]
                return

    remove_listener = off

    def remove_all_listeners(self, event: PortEvent | None = None) -> None:
        """Remove every listener of ``event``, or of both events."""
        if event is None:
            self._listeners.clear()
        else:
            self._listeners.pop(event, None)

    def listener_count(self, event: PortEvent) -> int:
        return len(self._listeners.get(event, ()))

    def __aiter__(self) -> PortIterator:
        """``async for message_event in port``: starts the port; ends on ``"close"``."""
        iterator = PortIterator(self)
        iterators = self._iterators
        if not isinstance(iterators, weakref.WeakSet):
            iterators = self._iterators = weakref.WeakSet()
        iterators.add(iterator)
        if self._started:
            self._schedule()
        else:
            self.start()
        return iterator

    def __repr__(self) -> str:
        gone = self._pair is not None and living(self._pair) is None  # the other end went
        state = (
            "neutered"
            if self._neutered
            else "closed"
            if self._closed or gone
            else "started"
            if self._started
            else "not started"
        )
        where = "routed" if self._router is not None else "local"
        return f"<MessagePortMain {where} {state}>"

    # ---- internals: listeners ------------------------------------------

    def _add(self, event: PortEvent, listener: F | None, once: bool) -> F | Callable[[F], F]:
        if event not in ("message", "close"):
            raise ValueError(f"a MessagePortMain emits 'message' and 'close', not {event!r}")

        def register(fn: F) -> F:
            if not callable(fn):
                raise TypeError(f"listener must be callable, not {type(fn).__name__}")
            if self._started and not self._neutered:
                _require_loop("on")
            entry = (fn, once, _is_async(fn))
            self._listeners[event] = (*self._listeners.get(event, ()), entry)
            self._schedule()
            return fn

        return register if listener is None else register(listener)

    # ---- internals: travelling -----------------------------------------

    def _neuter(self) -> deque[Queued]:
        """Give up this end: return what was not delivered (ending in CLOSE if closed)."""
        items = self._inbox if self._inbox is not None else deque()
        self._inbox = None
        if self._closed and not (items and items[-1] is CLOSE):
            items.append(CLOSE)  # the next holder must learn the channel is closed
        self._neutered = True
        self._router = self._pair = None
        self._unpin()
        for iterator in list(self._iterators):
            iterator.wake()
        return items

    def _move(self) -> MessagePortMain:
        """Hand this end to a fresh object in this process; this one is neutered."""
        new = MessagePortMain()
        pair = self._pair
        if pair is not None and living(pair) is None:  # the other end was collected: closed
            self._closed, pair = True, None
        new._router, new._wire, new._pair = self._router, self._wire, pair
        new._host = self._host if self._host is not None else new._host
        new._received = self._received
        new._closed = self._closed
        self._successor = new._weak()
        if (peer := living(pair)) is not None:
            peer._pair = new._weak()
        if self._router is not None:
            self._router.moved(self, new)
        new._inbox = self._neuter() or None
        return new

    def _other_end(self) -> MessagePortMain | None:
        if self._pair is not None:
            return living(self._pair)
        return self._router.peer_of(self) if self._router is not None else None


class MessageChannelMain:
    """A pair of entangled ports (Electron's ``MessageChannelMain``).

    Attributes:
        port1: one end.
        port2: the other end.
    """

    __slots__ = ("port1", "port2")

    def __init__(self) -> None:
        self.port1 = MessagePortMain()
        self.port2 = MessagePortMain()
        self.port1._pair = self.port2._weak()
        self.port2._pair = self.port1._weak()

    def __repr__(self) -> str:
        return f"<MessageChannelMain {self.port1!r} {self.port2!r}>"


# ---- helpers shared with the routers and the endpoints ----------------------


def check_transfer(
    transfer: Iterable[MessagePortMain],
    source: MessagePortMain | None,
    router: object | None,
) -> list[MessagePortMain]:
    """Validate a ``transfer`` list before anything is sent; return it as a list.

    Raises:
        TypeError: naming the index of the first bad entry.
        ValueError: more than ``MAX_PORTS_PER_FRAME`` ports.
    """
    if transfer == ():
        return []  # the common case: nothing to check
    if isinstance(transfer, (str, bytes, MessagePortMain)) or not isinstance(transfer, Iterable):
        raise TypeError(
            f"transfer must be a list of MessagePortMain, not {type(transfer).__name__}"
        )
    ports = list(transfer)
    if len(ports) > MAX_PORTS_PER_FRAME:
        raise ValueError(
            f"transfer lists {len(ports)} ports; at most {MAX_PORTS_PER_FRAME} "
            "(ipcbus.MAX_PORTS_PER_FRAME) travel with one message: send them in several"
        )
    seen: dict[int, int] = {}
    other = source._other_end() if source is not None and ports else None
    for i, port in enumerate(ports):
        if not isinstance(port, MessagePortMain):
            raise TypeError(
                f"transfer[{i}] is not a MessagePortMain but {type(port).__name__} "
                f"(Port at index {i} is not a valid port)"
            )
        if port is source:
            raise TypeError(
                f"transfer[{i}] is the port being posted on; a port cannot be sent through "
                "itself (transfer list contains the source port)"
            )
        if id(port) in seen:
            raise TypeError(
                f"transfer[{i}] is a duplicate of transfer[{seen[id(port)]}]; list each port "
                "once (duplicate port in transfer list)"
            )
        if port._neutered:
            raise TypeError(
                f"transfer[{i}] was already transferred: a transferred port is neutered "
                "(port is already neutered) and cannot be sent again (use the port that "
                "arrived in event.ports)"
            )
        if other is not None and port is other:
            raise TypeError(
                f"transfer[{i}] is the other end of this port's channel; "
                "it cannot travel through its own channel"
            )
        if router is not None and port._router is not None and port._router is not router:
            raise TypeError(
                f"transfer[{i}] belongs to another connection (another IpcMain or "
                "IpcRenderer in this process); a port travels on the bus it arrived on"
            )
        seen[id(port)] = i
    return ports


def encode_message(message: Any) -> msgspec.Raw:
    """Encode a port message now, so that a bad value fails at the caller."""
    try:
        return msgspec.Raw(_encoder.encode(message))
    except _ENCODE_ERRORS as exc:
        where = unencodable(message, exc, named="the message")
        raise SerializationError(
            f"Cannot post_message on a MessagePortMain: {where}. Send what send() can send."
        ) from None


def _require_loop(method: str) -> None:
    if not loop_is_running():
        raise RuntimeError(
            f"MessagePortMain.{method}() needs a running event loop in this thread to "
            "deliver messages: call it from a coroutine (asyncio or trio) or a listener"
        )


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with async __call__
    )
