"""Delivering port frames in main: to an end's inbox or its holder, in order across moves.

A base class of ``_portroute.MainPortRouter``, so a port message stays one
object's methods. Where ``_portroute`` keeps the table (which end lives
where, whose peer it is, which connection owes frames for it), this is how
a frame reaches an end through it (``_deliver``, ``_put``): into the inbox of
an end in main, or forwarded to the connection holding it. While a renderer
owes frames back for an end it moved, that end's new traffic is held (up to
``MAX_HELD`` frames); what it gives back (``_give_back``) goes first, then
what was held (``_release``). Closing an end tells its peer (``_peer_gone``)
and forgets it (``_forget``, ``_drop``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._errors import FrameTooLargeError
from ._portends import After, End, Sink, dropped
from ._portparts import CLOSE, Item, Queued, Relayed
from .ports import close_ports_in

if TYPE_CHECKING:
    from ._wire import PortRef
    from .ports import MessagePortMain

__all__ = ("MAX_HELD", "MAX_UNANSWERED", "RouteDelivery")

#: Frames held while a renderer owes frames back for ends it moved, all its ends
#: together (``_deliver``, ``Sink.holding``).
MAX_HELD = 100_000

#: Ends closed while a renderer held them that may wait for its acknowledgement
#: (``_await_ack``): far above what an honest renderer has in flight in a burst
#: of closes, and a bound (~300 bytes each) on one that never answers.
MAX_UNANSWERED = 65_536


class RouteDelivery:
    """Delivers frames to main's routed ends, in order across moves; closes them."""

    if TYPE_CHECKING:  # set by MainPortRouter.__init__
        _ends: dict[int, End]
        _wires: dict[tuple[Sink, int], int]
        _at: dict[Sink, set[int]]
        _owing: dict[Sink, dict[int, int]]
        _inline: bool

        def send_out(
            self, ports: list[MessagePortMain], sink: Sink, *, relayed: bool = False
        ) -> tuple[list[PortRef], After]: ...

    # ---- delivering frames, in order across moves ------------------------

    def _give_back(self, sink: Sink, wire: int, item: Queued) -> None:
        end_id = wire if wire > 0 else self._wires.get((sink, wire), 0)
        end = self._ends.get(end_id)
        if end is None or sink not in end.owed:
            close_ports_in([item])
            return
        if item is CLOSE and end.peer:
            # Main tells a holder of a close only once the peer is gone: this
            # one was never sent, and taking it would leave the peer dangling.
            sink.refuse(f"port {end.id}: gave back a close main never sent")
            return
        left = end.owed[sink] - 1
        if left:
            end.owed[sink] = left
        else:
            del end.owed[sink]
            self._owing[sink].pop(end.id, None)
            if wire < 0 and not (end.sink is sink and end.wire == wire):
                self._wires.pop((sink, wire), None)
        if end.sink is None:
            self._put(end, item)  # in main: straight to the inbox, ahead of ``held``
        else:
            end.returned.append(item)
        if not end.owed:
            self._release(end)

    def _release(self, end: End) -> None:
        items = end.returned + end.held
        end.returned.clear()
        end.held.clear()
        _uncharge_held(end)
        for item in items:
            if end.id in self._ends:
                self._put(end, item)
            else:
                close_ports_in([item])

    def _deliver(self, end: End, item: Queued) -> None:
        if end.owed:
            end.held.append(item)
            charged = end.charged
            if charged is None:
                charged = end.charged = {}
            for sink in end.owed:
                charged[sink] = charged.get(sink, 0) + 1
                sink.holding += 1
                if sink.holding > MAX_HELD:
                    # The renderer said how many frames it gives back, and main
                    # cannot check that: one that does not give them back is cut
                    # off, which releases what waited. Counted over all its ends.
                    sink.refuse(
                        f"port {end.id}: {end.owed[sink]} frames this renderer owes back "
                        f"did not come while {sink.holding} frames waited for what it owes"
                    )
        else:
            self._put(end, item)

    def _put(self, end: End, item: Queued) -> None:
        sink = end.sink
        if sink is None:
            port = end.holder()
            if item is CLOSE:
                self._forget(end)
            # Only the one delivery a reader asked for may run listeners inline;
            # whatever they post in turn is delivered from tasks.
            inline, self._inline = self._inline, False
            if port is None:  # collected: its own close is on its way (Reaper)
                close_ports_in([item])
            elif (
                port._enqueue(item, inline)
                and type(item) is Relayed
                and (inbox := port._inbox)
                and inbox[-1] is item  # (not taken already, by a task started eagerly)
            ):
                end.park(item)  # it waits there: it counts against its sender
            return
        if not isinstance(item, Item):
            end.sent += 1
            sink.close(end.wire)
            self._await_ack(end, sink)
            return
        if sink.dead:
            end.sent += 1
            close_ports_in([item])
            return
        try:
            if item.ports:  # checked before send_out claims them
                sink.check(end.wire, item.data, len(item.ports))
            refs, after = self.send_out(item.ports, sink, relayed=type(item) is Relayed)
            sink.message(end.wire, item.data, refs)
        except FrameTooLargeError as exc:
            # Not counted in ``sent``: the holder never sees it, so owes nothing back.
            dropped(f"for port {end.id}", item, exc)
            return
        end.sent += 1
        after()

    def _await_ack(self, end: End, sink: Sink) -> None:
        """``sink`` was told ``end`` is closed: keep it until ``sink`` acknowledges.

        Frames ``sink`` sent for the end before it read the close must still
        find it (a move gives back what main sent, the close included, to the
        end's next holder), so main cannot forget it sooner. It counts against
        ``sink`` now, not its maker. A renderer answers each close as it reads
        it; one with more than ``MAX_UNANSWERED`` unanswered would grow main's
        table with every close its peers cause, and is cut off.
        """
        acks = sink.acks
        end.uncharge()
        end.origin = acks
        acks.count += 1
        if acks.count > MAX_UNANSWERED:
            sink.refuse(
                f"more than {MAX_UNANSWERED} message ports closed while this renderer "
                "held them wait for it to acknowledge the close; a renderer answers "
                "each PortClose as it reads it"
            )

    def _forget(self, end: End) -> None:
        end.unpark_all()  # its port's inbox is closed, collected or gone elsewhere
        if self._ends.pop(end.id, None) is not None:
            end.uncharge()
        _uncharge_held(end)  # whatever is still held is no one's to owe any more
        for sink in end.owed:  # closed while frames were owed: nothing will take them now
            wire = self._owing.get(sink, {}).pop(end.id, 0)
            if wire < 0 and self._wires.get((sink, wire)) == end.id:
                del self._wires[(sink, wire)]
        if end.sink is not None:
            self._at.get(end.sink, set()).discard(end.id)
            if end.wire < 0:
                self._wires.pop((end.sink, end.wire), None)

    def _drop(self, end: End) -> None:
        self._forget(end)  # held frames uncharged there
        close_ports_in(end.returned)
        close_ports_in(end.held)
        end.returned.clear()
        end.held.clear()

    def _peer_gone(self, end: End) -> None:
        peer = self._ends.get(end.peer)
        end.peer = 0
        if peer is not None:
            peer.peer = 0
            self._deliver(peer, CLOSE)


def _uncharge_held(end: End) -> None:
    """``end``'s held frames are gone: no longer on its owing renderers' account."""
    if end.charged is not None:
        for sink, n in end.charged.items():
            sink.holding -= n
        end.charged = None
