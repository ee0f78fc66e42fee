"""A message port's lifetime: its pin, its collection, and closing it.

The lowest base class of ``ports.MessagePortMain`` (under
``_portdelivery.PortDelivery``), so these stay one object's methods. An end
that is started and whose channel is open is pinned in its loop's
``LoopHold`` (``_pin``); any other end lives only as long as something
refers to it, and one collected while its channel is open closes it
(``__del__``, then ``_pair_gone`` on the loop, or its router's
``collected``). Closing from this side (``_shut``) or hearing it from the
other (``_hear_close``) is here too, and so are the helpers the routers
share: ``living`` reads a weak reference to an end that may be being
collected; ``close_ports_in`` and ``discard_ports`` close the ports that
messages nobody will read carried.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from ._loop import LoopHold, loop_hold
from ._portparts import CLOSE, Item, Queued

if TYPE_CHECKING:
    from collections.abc import Set as AbstractSet

    from ._portdelivery import Listener
    from ._portiter import PortIterator
    from ._portparts import Router
    from .ports import MessagePortMain

__all__ = ("PortLifetime", "close_ports_in", "discard_ports", "living")


class PortLifetime:
    """An end's pin, its collection and its closing: when the channel ends for it."""

    if TYPE_CHECKING:  # set by MessagePortMain.__init__
        _router: Router | None
        _wire: int
        _pair: weakref.ref[MessagePortMain] | None
        _self: weakref.ref[MessagePortMain] | None
        _inbox: deque[Queued] | None
        _listeners: dict[str, tuple[Listener, ...]]
        _iterators: AbstractSet[PortIterator]
        _hold: LoopHold | None
        _successor: weakref.ref[MessagePortMain] | None
        _closed: bool
        _closed_here: bool
        _close_emitted: bool
        _neutered: bool

        def close(self) -> None: ...
        def _queue(self, item: Queued) -> None: ...
        def _schedule(self) -> None: ...

    #: Set by ``__del__``: this object is being collected. A weak reference to
    #: it may still answer for a moment (``__del__`` can let another thread run
    #: before the references are cleared): ``living`` says no.
    _collected = False

    # ---- internals: lifetime and closing ------------------------------

    def _pin(self) -> None:
        """Keep this end alive while it could receive messages: started, channel open.

        Electron's rule (``MessagePort::HasPendingActivity``): a started end
        delivers to its listeners with no other reference to it; an end never
        started, that nothing refers to, can never be read, and is collected.
        The pin lasts as long as the loop (a trio run: ``_loop_ended``).
        """
        if self._hold is None and not (self._closed or self._neutered):
            hold = loop_hold()
            if hold is not None:
                hold.pins.add(self)
                self._hold = hold

    def _unpin(self) -> None:
        hold = self._hold
        if hold is not None:
            hold.pins.discard(self)
            self._hold = None

    def _loop_ended(self) -> None:
        """The trio run it was started on has ended: nothing can deliver here now.

        It is let go quietly (closed, with no ``"close"`` to emit and no peer
        to tell: its channel ends with the loop).
        """
        self._hold = None
        self._closed = self._close_emitted = True

    def _weak(self) -> weakref.ref[MessagePortMain]:
        """A weak reference to this end, for the other end's ``_pair``, held by this end.

        The collector clears a weak reference that is itself garbage before it
        runs ``__del__``: the one in a collected end's ``_pair`` must belong to
        its peer, which lives on, or the peer could not be told.
        """
        if self._self is None:
            self._self = weakref.ref(cast("MessagePortMain", self))
        return self._self

    def __del__(self) -> None:
        # Collected while its channel was open (an end that is started is
        # pinned, so this one never was): nobody can post on it or read it any
        # more, so the channel closes and the other end hears "close", as in
        # Electron. This runs inside the garbage collector, at any point and
        # maybe in another thread, so it changes nothing itself: it asks the
        # loop of whoever must learn to look (a routed end's router, or a
        # started peer). A peer never started learns when it is used.
        try:
            if self._closed or self._neutered:
                return
            self._collected = True
            if self._router is not None:
                self._router.collected(self._wire)
            elif (peer := living(self._pair)) is not None:
                if (hold := peer._hold) is not None:
                    hold.wake(peer._pair_gone)
        except Exception:  # nothing can be raised to anyone from here
            pass

    def _pair_gone(self) -> None:
        """On the loop: the other end of this direct pair was collected (``__del__``)."""
        port: PortLifetime | None = self
        while port is not None and port._successor is not None:  # moved meanwhile
            port = port._successor()  # (None: collected as well; nobody is left to tell)
        if port is not None:
            port._pair_check()

    def _pair_check(self) -> None:
        """If the other end of this direct pair was collected, the channel is closed."""
        pair = self._pair
        if pair is not None and living(pair) is None and self._hear_close():
            self._schedule()

    def _hear_close(self) -> bool:
        """The channel was closed from the other end: queue ``"close"`` (no task yet).

        ``False`` if this end was closed or had moved on already.
        """
        if self._closed or self._neutered:
            return False
        self._closed = True
        self._router = self._pair = None
        self._unpin()
        self._queue(CLOSE)
        return True

    def _shut(self) -> bool:
        """Close this end, leaving ``"close"`` queued; ``False`` if it was closed before."""
        if self._closed or self._neutered:
            return False
        self._closed = self._closed_here = True
        self._unpin()
        dropped, self._inbox = self._inbox, deque([CLOSE])
        router, pair = self._router, self._pair
        self._router = self._pair = None
        peer = living(pair)
        if router is not None:
            router.close(cast("MessagePortMain", self))
        elif peer is not None:
            peer._enqueue(CLOSE)
        if dropped:
            close_ports_in(dropped)
        return True

    def _discard(self) -> None:
        """Close an end that no code here has seen (it arrived with a message nobody took).

        As :meth:`close`, but with no listener or iterator there is nobody to
        hear its ``"close"``: no delivery task is started for it, so closing
        many ports at once costs no task each. Its peer still learns.
        """
        if self._listeners or self._iterators:
            self.close()
        elif self._shut():
            self._inbox = None
            self._close_emitted = True


def living(ref: weakref.ref[MessagePortMain] | None) -> MessagePortMain | None:
    """What ``ref`` refers to, unless that is gone or being collected (``_collected``)."""
    port = ref() if ref is not None else None
    return None if port is None or port._collected else port


def close_ports_in(items: Iterable[Queued]) -> None:
    """Close the ports carried by messages nobody will read, so their peers learn it."""
    for item in items:
        if isinstance(item, Item) and item.ports:
            discard_ports(item.ports)


def discard_ports(ports: Iterable[MessagePortMain]) -> None:
    """Close ports that arrived but were never handed to any code, so their peers learn it.

    Nobody can be listening for their ``"close"``, so no task is started per
    port (a message may carry up to ``MAX_PORTS_PER_FRAME`` of them).
    """
    for port in ports:
        port._discard()
