"""Routing message ports between processes, main's side (docs/ports-and-streams.md, "Routing").

Main is the router. It knows every end that has ever left the process it was
created in: where it lives (in main, as a ``MessagePortMain``; or in a
renderer, under an id on that connection) and which end is its peer. A
renderer's end sends ``PortMessage(id)`` to main; main delivers it to the
peer's inbox or forwards it as ``PortMessage(peer's id)`` to the connection
holding the peer. A renderer never needs to know where the other end is.

Ids: main numbers ends from 1 (one space for all connections) and names
them so to renderers. A renderer that sends an end of a channel it created
names it, and its peer, with its own negative ids, which main maps per
connection (``_wires``). Nothing can collide.

Order survives moves. Every end that moves *into* main (a renderer transfers
it) is first landed as an object in main; forwarding it again is a local
move, so main never has a message in flight for an end it is moving. The
one race left is a renderer moving an end while main is sending to it.
Main counts the frames it sent to that end (``sent``); the renderer says how
many it had read (``received``) and gives back, in order, every frame it
read but did not deliver and every frame that arrives after the move
(``returned=True``). Main holds the end's new traffic until all of those
(``owed``) are back, then releases them first. While an end waits, main sends
nothing to its holder, so only one connection at a time owes frames.

An end in main is held weakly (``End.port``): one that nobody refers to and
that is not started is collected, and closes its channel (``collected``).

Closing: a holder's ``PortClose`` closes the channel and main tells the peer
(``CLOSE`` in the inbox, or ``PortClose`` to its holder, which answers with
its own ``PortClose``: the acknowledgement that lets main forget the end). A
connection that ends closes every end held there, so their peers see
``"close"``.

A renderer's side is ``_rendererports``. No awaits here: the router queues
frames on the protocol core and asks the endpoint to flush soon. This module
keeps the table and the frames renderers send; how a frame reaches an end
(held while owed, given back, released, closed) is its base class,
``_routedelivery.RouteDelivery``.
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections.abc import Callable, Sequence

import anyio.abc
import msgspec

from ._admission import RELAY_HARD
from ._events import PortClosed, PortMessageReceived
from ._loop import LoopHold
from ._outbox import MAX_PENDING_OUTPUT
from ._portends import MAX_PARKED, After, End, Sink, closed_port, nothing
from ._portparts import CLOSE, Item, PortHost, Reaper, Relayed
from ._routedelivery import RouteDelivery
from ._wire import PortRef
from .ports import MessagePortMain, close_ports_in

__all__ = ("MainPortRouter",)

logger = logging.getLogger("ipcbus")


class MainPortRouter(RouteDelivery):
    """Main's table of port ends and the rules that move messages between them."""

    def __init__(
        self,
        task_group: Callable[[], anyio.abc.TaskGroup | None],
        max_open_ports: Callable[[], int],
    ) -> None:
        self.host = PortHost(task_group)
        self._max_open_ports = max_open_ports  # per renderer, read when used: see land
        self._ends: dict[int, End] = {}
        self._wires: dict[tuple[Sink, int], int] = {}  # renderer-named ends (< 0)
        self._at: dict[Sink, set[int]] = {}  # ends held on each connection
        # The ends each connection owes frames for, with the wire it names each by.
        self._owing: dict[Sink, dict[int, int]] = {}
        self._ids = itertools.count(1)
        self._inline = False  # delivering what a reader just received (see _put)
        self._reaper = Reaper(self.host, self._reap_one)  # ends whose objects were collected

    def __len__(self) -> int:
        return len(self._ends)

    # ---- the Router protocol: ports held in main ------------------------

    def post(self, port: MessagePortMain, data: msgspec.Raw, ports: list[MessagePortMain]) -> None:
        end = self._ends.get(port._wire)
        if end is None or not end.peer:
            return  # the channel is closed; CLOSE is on its way to this port
        peer = self._ends[end.peer]
        if peer.sink is not None:
            peer.sink.check(peer.wire, data, len(ports))  # raises before any port is claimed
        item = Item(data, [self.claim(p) for p in ports])
        self._deliver(peer, item)

    def close(self, port: MessagePortMain) -> None:
        end = self._ends.get(port._wire)
        if end is not None and end.sink is None and end.holder() is port:
            self._drop(end)
            self._peer_gone(end)

    def moved(self, old: MessagePortMain, new: MessagePortMain) -> None:
        end = self._ends.get(old._wire)
        if end is not None and end.holder() is old:
            end.port = weakref.ref(new)

    def peer_of(self, port: MessagePortMain) -> MessagePortMain | None:
        end = self._ends.get(port._wire)
        peer = self._ends.get(end.peer) if end is not None else None
        return peer.holder() if peer is not None and peer.sink is None else None

    def took(self, wire: int, item: Relayed) -> None:
        end = self._ends.get(wire)
        if end is not None:  # else forgotten, and all it parked given back then
            end.took(item)

    def collected(self, wire: int) -> None:
        self._reaper.collected(wire)

    def bind(self, hold: LoopHold | None) -> None:
        """Main runs on the loop of ``hold`` now: collected ends close there."""
        self.host.hold = hold
        self._reaper.rebound()

    def _reap_one(self, wire: int) -> None:
        """Close an end in main whose object was collected (``collected``), on the loop."""
        end = self._ends.get(wire)
        if end is not None and end.sink is None and end.holder() is None:
            self._drop(end)
            self._peer_gone(end)

    # ---- sending ports to a renderer -----------------------------------

    def claim(self, port: MessagePortMain) -> MessagePortMain:
        """Take ``port`` (checked by ``check_transfer``) for sending; neuter it."""
        if port._router is None and (peer := port._other_end()) is not None:
            self._adopt(port, peer)
        return port._move()

    def send_out(
        self, ports: list[MessagePortMain], sink: Sink, *, relayed: bool = False
    ) -> tuple[list[PortRef], After]:
        """Refs for claimed ``ports`` going to ``sink``; run ``after`` once the frame is queued.

        ``relayed``: they came in a renderer's port message (``Relayed``) and
        stay charged to the renderer that made them; else main's code sends
        them on, and they are no longer their maker's to answer for.
        """
        if not ports:
            return [], nothing
        moves = [self._export(port, sink, relayed) for port in ports]

        def after() -> None:
            for _, then in moves:
                then()

        return [ref for ref, _ in moves], after

    def _adopt(self, port: MessagePortMain, peer: MessagePortMain) -> None:
        # A direct pair leaves its process: from now on both ends are routed.
        a = self._new(0)
        b = self._new(a.id)
        a.peer = b.id
        for end, obj in ((a, port), (b, peer)):
            end.port = weakref.ref(obj)
            obj._router, obj._wire, obj._pair, obj._host = self, end.id, None, self.host

    def _export(self, port: MessagePortMain, sink: Sink, relayed: bool) -> tuple[PortRef, After]:
        if port._router is None and (peer := port._other_end()) is not None:
            self._adopt(port, peer)  # a direct pair carried in a message that was queued
        end = self._ends.get(port._wire) if port._router is self else None
        items = port._neuter()
        if end is not None:
            end.unpark_all()  # what waited in main goes on to the renderer's output
        if end is None:
            end = self._new(0)  # a closed port travels as an end with no peer
        end.port, end.sink, end.wire, end.sent = None, sink, end.id, 0
        self._at.setdefault(sink, set()).add(end.id)
        if not relayed:
            end.uncharge()  # main's code moved it on: no longer its maker's to answer for

        def after() -> None:
            if end.owed:  # a former holder still gives frames back: these go first
                end.returned[:0] = items
            else:
                for item in items:
                    self._put(end, item)

        return PortRef(end.id), after

    # ---- frames from a renderer ----------------------------------------

    def land(self, sink: Sink, refs: Sequence[PortRef]) -> list[MessagePortMain]:
        """The ports of a renderer's ``Message`` or ``Request`` (``event.ports``)."""
        if not self._kept_promise(sink):
            return [closed_port(self.host) for _ in refs]
        return self._land_all(sink, refs)

    def _land_all(self, sink: Sink, refs: Sequence[PortRef]) -> list[MessagePortMain]:
        """Ports a renderer sent: each becomes an object in main.

        A renderer may have at most ``max_open_ports`` ends of channels it made
        in main's table (each costs main kilobytes for a few bytes sent, and
        stays until it is closed). A frame that would pass that ends its
        connection (``PROTOCOL_ERROR``); its ports arrive closed.
        """
        if sink.refused:
            return [closed_port(self.host) for _ in refs]
        if any(ref.received < 0 or ref.returning < 0 for ref in refs):
            # A negative count would make main hold the end's traffic for frames
            # that never come (``owed``), without the promise that bounds them.
            sink.refuse("a port reference with a negative frame count")
            return [closed_port(self.host) for _ in refs]
        if self._reaper:  # ends collected since: they count no more (not at the next turn)
            self._reaper.reap()
        limit = self._max_open_ports()
        if sink.budget.count + self._new_ends(sink, refs) > limit:
            sink.refuse(
                f"more than {limit} message-port ends of channels this renderer "
                "made are open in main (IpcMain(max_open_ports=...)); close the ports "
                "you do not use"
            )
            return [closed_port(self.host) for _ in refs]
        # Each ref's ``returning`` frames come right after this frame (PortRef).
        sink.promised += sum(ref.returning for ref in refs)
        return [self._land(sink, ref) for ref in refs]

    def _kept_promise(self, sink: Sink) -> bool:
        """Whether a frame that gives nothing back may come from ``sink`` now.

        Main holds an end's new traffic until the frames a renderer said it
        gives back are back, and cannot check that count: a renderer that
        sends anything else first broke its word, and is cut off.
        """
        if sink.promised and not sink.refused:
            sink.refuse(
                f"this renderer said {sink.promised} more frames would be given back "
                "right after the ports it sent, and sent another frame first"
            )
        return not sink.refused

    def _new_ends(self, sink: Sink, refs: Sequence[PortRef]) -> int:
        """How many ends main would first hear of from ``refs`` (``_land`` makes them)."""
        wires = self._wires
        new = {
            wire
            for ref in refs
            for wire in (ref.id, ref.peer)
            if wire < 0 and (sink, wire) not in wires
        }
        return len(new)

    def port_message(self, sink: Sink, event: PortMessageReceived) -> None:
        if event.returned:
            sink.gave_back()
        elif not self._kept_promise(sink):
            return  # its connection is ending
        ports = self._land_all(sink, event.ports) if event.ports else []
        item = Relayed(event.data, ports, sink.parking)  # charged to their maker wherever they go
        if sink.refused and not event.returned:
            close_ports_in([item])  # its ports were too many: its connection is ending
            return
        if event.returned:
            self._give_back(sink, event.port_id, item)
            return
        end = self._held_by(sink, event.port_id)
        if end is None or not end.peer:
            if end is None:
                logger.debug("dropped a message for port %d, not held there", event.port_id)
            close_ports_in([item])
            return
        self._inline = True
        peer = self._ends[end.peer]
        try:
            self._deliver(peer, item)
        finally:
            self._inline = False
        to = peer.sink
        if to is not None:
            unsent = to.endpoint.conn.pending_output
            if unsent > MAX_PENDING_OUTPUT:
                # The renderer it went to reads more slowly than this one posts:
                # this one reads no more until that one has taken some.
                hard = unsent > RELAY_HARD * MAX_PENDING_OUTPUT
                sink.endpoint.dispatcher.relay_blocked(to.endpoint.outbox, hard=hard)
        elif sink.parking.parked > MAX_PARKED:
            # Main holds the end, and its code does not read it (not started,
            # a slow listener): the same, until main's code takes some.
            hard = sink.parking.parked > RELAY_HARD * MAX_PARKED
            sink.endpoint.dispatcher.relay_blocked(sink.parking, hard=hard)

    def port_closed(self, sink: Sink, event: PortClosed) -> None:
        if event.returned:
            sink.gave_back()
            self._give_back(sink, event.port_id, CLOSE)
            return
        if not self._kept_promise(sink):
            return
        end = self._held_by(sink, event.port_id)
        if end is not None:
            self._drop(end)
            self._peer_gone(end)

    def sink_gone(self, sink: Sink) -> None:
        """The connection ended: its ends close (their peers see "close")."""
        sink.dead = True
        sink.parking.release()
        for end_id in sorted(self._at.pop(sink, ())):
            end = self._ends.get(end_id)
            if end is not None and end.sink is sink:
                self._drop(end)
                self._peer_gone(end)
        for end_id in sorted(self._owing.pop(sink, {})):
            end = self._ends.get(end_id)
            if end is not None and end.owed.pop(sink, None) is not None and not end.owed:
                self._release(end)
        for key in [key for key in self._wires if key[0] is sink]:
            del self._wires[key]

    # ---- internals -----------------------------------------------------

    def _new(self, peer: int) -> End:
        end = End(next(self._ids), peer)
        self._ends[end.id] = end
        return end

    def _new_at(self, sink: Sink, wire: int, peer: int) -> End:
        end = self._new(peer)
        end.sink, end.wire, end.origin = sink, wire, sink.budget
        sink.budget.count += 1
        self._wires[(sink, wire)] = end.id
        self._at.setdefault(sink, set()).add(end.id)
        return end

    def _held_by(self, sink: Sink, wire: int) -> End | None:
        end_id = wire if wire > 0 else self._wires.get((sink, wire), 0)
        end = self._ends.get(end_id)
        return end if end is not None and end.sink is sink and end.wire == wire else None

    def _land(self, sink: Sink, ref: PortRef) -> MessagePortMain:
        end: End | None
        if ref.id > 0 or (sink, ref.id) in self._wires:
            end = self._held_by(sink, ref.id)
        else:  # an end of a channel the renderer created, new to main
            end = self._new_at(sink, ref.id, 0)
            if ref.peer < 0 and (sink, ref.peer) not in self._wires:
                end.peer = self._new_at(sink, ref.peer, end.id).id
        if end is None:
            logger.debug("a renderer sent port %d, which it does not hold", ref.id)
            return closed_port(self.host)
        self._at[sink].discard(end.id)
        owed = ref.returning + max(0, end.sent - ref.received)
        if owed:
            end.owed[sink] = end.owed.get(sink, 0) + owed
            self._owing.setdefault(sink, {})[end.id] = ref.id
        elif ref.id < 0:
            del self._wires[(sink, ref.id)]
        port = MessagePortMain()
        port._router, port._wire, port._host = self, end.id, self.host
        end.port, end.sink, end.wire, end.sent = weakref.ref(port), None, 0, 0
        returned, end.returned = end.returned, []
        for i, item in enumerate(returned):
            if end.id not in self._ends:  # closed by one of them: the rest are dropped
                close_ports_in(returned[i:])
                break
            self._put(end, item)
        return port
