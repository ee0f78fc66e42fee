"""Routing message ports in a renderer: its ends that go through main (``_portroute``).

A renderer knows only its own ends, by the ids main knows them by (its own
negative ids for ends of channels it created and sent). Everything it posts
goes to main; main says where the other end is. It holds its ends weakly:
one that nobody refers to and that is not started is collected, and closes
(``collected``).
"""

from __future__ import annotations

import itertools
import logging
import weakref
from collections import deque
from collections.abc import Sequence

import anyio.abc
import msgspec

from ._endpoint import Endpoint
from ._errors import FrameTooLargeError
from ._events import PortClosed, PortMessageReceived
from ._loop import loop_hold
from ._portends import After, dropped, nothing
from ._portparts import CLOSE, Item, PortHost, Queued, Reaper, Relayed
from ._protocol import Connection, State
from ._values import too_large
from ._wire import PortRef
from .ports import MessagePortMain, close_ports_in, discard_ports, living

__all__ = ("RendererPortRouter",)

logger = logging.getLogger("ipcbus")


class RendererPortRouter:
    """A renderer's ports that go through main, by the id main knows them by."""

    def __init__(self) -> None:
        self._endpoint: Endpoint | None = None
        self.host = PortHost(self._task_group)
        self._ports: dict[int, weakref.ref[MessagePortMain]] = {}
        self._ids = itertools.count(-1, -1)
        # Messages dropped while ports move (too large for main), whose own
        # ports are closed only once every frame given back has gone: a
        # PortClose among them would break the count main was promised (or
        # name an end main does not know yet).
        self._doomed: list[Queued] = []
        self._giving_back = 0  # nested after()s under way
        self._reaper = Reaper(self.host, self._reap_one)  # ends whose objects were collected

    def _task_group(self) -> anyio.abc.TaskGroup | None:
        endpoint = self._endpoint
        if endpoint is None or endpoint.conn.state is State.CLOSED:
            return None
        return endpoint.task_group

    def attach(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self.host.hold = loop_hold()  # collected ends close on this loop
        self._reaper.rebound()

    def _port(self, wire: int) -> MessagePortMain | None:
        """The object holding end ``wire`` here, if any (and not collected)."""
        ref = self._ports.get(wire)
        return living(ref)

    def _conn(self) -> Connection | None:
        endpoint = self._endpoint
        if endpoint is None or endpoint.conn.state is not State.OPEN:
            return None
        return endpoint.conn

    def _flush(self) -> None:
        if self._endpoint is not None:
            self._endpoint.outbox.flush_later()

    # ---- the Router protocol -------------------------------------------

    def post(self, port: MessagePortMain, data: msgspec.Raw, ports: list[MessagePortMain]) -> None:
        conn = self._conn()
        if conn is None or self._port(port._wire) is not port:
            return  # the connection is gone: this port is closing
        try:
            conn.check_port_message(port._wire, data, len(ports))  # before send_out
        except FrameTooLargeError as exc:
            raise too_large("post_message", None, exc) from None
        refs, after = self.send_out(ports)
        conn.send_port_message(port._wire, data, refs)
        after()
        self._flush()

    def close(self, port: MessagePortMain) -> None:
        if self._port(port._wire) is port:
            self._closed(port._wire)

    def _closed(self, wire: int) -> None:
        del self._ports[wire]
        if (conn := self._conn()) is not None:
            conn.send_port_close(wire)
            self._flush()

    def moved(self, old: MessagePortMain, new: MessagePortMain) -> None:
        if self._port(old._wire) is old:
            self._ports[old._wire] = weakref.ref(new)

    def peer_of(self, port: MessagePortMain) -> MessagePortMain | None:
        return None  # only main knows where the other end is

    def took(self, wire: int, item: Relayed) -> None:
        pass  # nothing is parked in a renderer: only main relays (``Relayed``)

    def collected(self, wire: int) -> None:
        self._reaper.collected(wire)

    def _reap_one(self, wire: int) -> None:
        """Close an end whose object was collected (``collected``), on the loop."""
        ref = self._ports.get(wire)
        if ref is not None and living(ref) is None:
            self._closed(wire)

    # ---- ports leaving for main ----------------------------------------

    def send_out(self, ports: list[MessagePortMain]) -> tuple[list[PortRef], After]:
        """Refs for ``ports`` (checked); run ``after`` once the carrying frame is queued."""
        if not ports:
            return [], nothing
        refs: list[PortRef] = []
        moves: list[tuple[int, deque[Queued]]] = []
        for port in ports:
            peer = received = 0
            if port._router is self and self._port(port._wire) is port:
                wire, received = port._wire, port._received
                del self._ports[wire]
            elif port._router is None and (other := port._other_end()) is not None:
                wire, peer = next(self._ids), next(self._ids)
                self._register(other, peer)
            else:  # closed: travels as a new end whose channel is closed
                wire = next(self._ids)
            items = self._fitting(wire, port._neuter())
            refs.append(PortRef(wire, peer, received, len(items)))
            moves.append((wire, items))

        def after() -> None:
            self._giving_back += 1
            try:
                for wire, items in moves:
                    for item in items:
                        self._give_back(wire, item)
            finally:
                self._giving_back -= 1
            if not self._giving_back and self._doomed:
                doomed, self._doomed = self._doomed, []
                close_ports_in(doomed)

        return refs, after

    def _fitting(self, wire: int, items: deque[Queued]) -> deque[Queued]:
        """``items`` without the messages main would refuse for size (dropped now).

        ``returning`` promises main exactly the frames that follow; one dropped
        after the promise would have main wait for it (and cut us off).
        """
        conn = self._conn()
        if conn is None or not items:
            return items
        kept: deque[Queued] = deque()
        for item in items:
            if isinstance(item, Item):
                try:
                    conn.check_port_message(wire, item.data, len(item.ports))
                except FrameTooLargeError as exc:
                    self._doom(f"given back for port {wire}", item, exc)
                    continue
            kept.append(item)
        return kept

    def _doom(self, where: str, item: Item, exc: FrameTooLargeError) -> None:
        """Drop ``item`` (logged); its ports close after the frames given back (``after``)."""
        logger.warning("dropped a port message %s: %s", where, exc)
        self._doomed.append(item)

    def _give_back(self, wire: int, item: Queued) -> None:
        conn = self._conn()
        if conn is None:
            close_ports_in([item])
        elif isinstance(item, Item):
            try:
                conn.check_port_message(wire, item.data, len(item.ports))  # before send_out
            except FrameTooLargeError as exc:
                self._doom(f"given back for port {wire}", item, exc)
                return
            refs, after = self.send_out(item.ports)
            conn.send_port_message(wire, item.data, refs, returned=True)
            after()
        else:
            conn.send_port_close(wire, returned=True)

    def _register(self, port: MessagePortMain, wire: int) -> MessagePortMain:
        port._router, port._wire, port._pair, port._host = self, wire, None, self.host
        self._ports[wire] = weakref.ref(port)
        return port

    # ---- frames from main ----------------------------------------------

    def land(self, refs: Sequence[PortRef]) -> list[MessagePortMain]:
        """Ports main sent (``event.ports``)."""
        return [self._register(MessagePortMain(), ref.id) for ref in refs]

    def port_message(self, event: PortMessageReceived) -> None:
        ref = self._ports.get(event.port_id)
        port = living(ref)
        if ref is not None and port is None:  # collected: closing (Reaper), nobody reads it
            discard_ports(self.land(event.ports))  # their peers learn
            return
        if port is None:  # moved on: give it back, main knows where the end went
            if (conn := self._conn()) is not None:
                try:
                    conn.send_port_message(event.port_id, event.data, event.ports, returned=True)
                except FrameTooLargeError as exc:
                    dropped(f"given back for port {event.port_id}", Item(event.data, []), exc)
            return
        port._received += 1
        ports = self.land(event.ports) if event.ports else []
        port._enqueue(Item(event.data, ports), inline=True)

    def port_closed(self, event: PortClosed) -> None:
        ref = self._ports.pop(event.port_id, None)
        conn = self._conn()
        if ref is None:
            if conn is not None:
                conn.send_port_close(event.port_id, returned=True)
            return
        if conn is not None:
            conn.send_port_close(event.port_id)  # acknowledge: main may forget the end
        if (port := living(ref)) is not None:
            port._received += 1
            port._enqueue(CLOSE)

    def connection_lost(self) -> None:
        """Main is gone: every routed port is closed."""
        doomed, self._doomed = self._doomed, []
        close_ports_in(doomed)
        ports = [port for ref in self._ports.values() if (port := living(ref)) is not None]
        self._ports.clear()
        for port in ports:
            port._enqueue(CLOSE)
