"""One renderer's connection in main, from its first byte to its end.

``serve`` runs it: a ``WebContents`` and its ``Link`` (the ``Endpoint``'s
owner: lookups, the gate, ports, the handshake), the admission of its token
(``max_connections``, ``max_pending_handshakes``, ``handshake_timeout``), and
at the end ``finish``: a spawned child reaped (``_children``),
``DisconnectDetails`` set, ``on_disconnect`` hooks run. Connections refused
before any of that get a lone Goodbye (``_refusing``). The state all of this reads and updates is
``IpcMain``'s (its renderers, links and pending handshakes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from ._buffers import body_buffer
from ._calls import ReplySlot
from ._children import reap, stop
from ._endpoint import Endpoint, logger
from ._events import (
    ConnectionTerminated,
    HandshakeCompleted,
    MessageReceived,
    PortClosed,
    PortMessageReceived,
    RequestReceived,
)
from ._framestream import frame_limit
from ._guards import Gatekeeper
from ._liveness import heartbeat_for
from ._lograte import WarningRate
from ._mainevents import IpcMainEvent, IpcMainInvokeEvent, disconnect_details
from ._protocol import Connection, HandshakeRefused, Role
from ._refusing import refuse
from ._registry import Callback
from ._states import State
from ._webcontents import WebContents
from ._wire import CloseCode, PortRef, RequestKind

if TYPE_CHECKING:
    from .main import IpcMain

__all__ = ("Link", "Waiting", "serve")


class Waiting:
    """Connections through one door that have not shown the token yet, oldest first.

    At ``limit()`` more, the oldest is dropped (``make_room_for_a_handshake``).
    Main's listeners and web server share main's (``max_pending_handshakes``);
    a NATS replica has its own, larger: a renderer's Hello takes a network
    round trip there, and many may ask at once.
    """

    __slots__ = ("limit", "links")

    def __init__(self, limit: Callable[[], int]) -> None:
        self.limit = limit
        self.links: dict[Link, None] = {}  # a dict keeps the order they came in


class Link:
    """Dispatch for one renderer's connection (the Endpoint's owner)."""

    def __init__(
        self, main: IpcMain, contents: WebContents, allowed: frozenset[str] | None = None
    ) -> None:
        self.main = main
        self.contents = contents
        self._message_event = IpcMainEvent  # made per message by the endpoint...
        self._invoke_event = IpcMainInvokeEvent
        self._event_sender = contents  # ...with this as their sender
        # The handshake completed or failed; the Event is made only if someone waits.
        self.handshake_over = False
        self._handshake_event: anyio.Event | None = None
        self.allowed = allowed
        self.renderer_id: int | None = None  # given, not counted (a replica's)
        self.waiting: Waiting | None = None  # until its handshake, if it was accepted
        self.connected = False  # completed the handshake (and so was registered)

    @property
    def warnings(self) -> WarningRate:
        """Main's rate for connections that end before their handshake."""
        return self.main._handshake_warnings

    def _handshake_over(self) -> None:
        self.handshake_over = True
        self.main._handshakes.forget(self)  # its deadline, if it had one
        if self._handshake_event is not None:
            self._handshake_event.set()

    async def wait_handshake(self) -> None:
        """Return once the handshake has completed, or the connection ended."""
        if not self.handshake_over:
            if self._handshake_event is None:
                self._handshake_event = anyio.Event()
            await self._handshake_event.wait()

    def handshake_expired(self, reason: str) -> None:
        """``handshake_timeout`` passed (``HandshakeDeadlines``): close, if still waiting."""
        endpoint = self.contents._endpoint
        if endpoint is not None and endpoint.conn.state is State.HANDSHAKE:
            # In the connection's own keeping: a failure ends it, not main.
            endpoint.start_soon(endpoint.close, CloseCode.PROTOCOL_ERROR, reason)

    def admit(self) -> int:
        """The core accepted the token (``Connection(admit=...)``)."""
        return admit(self.main, self, self.renderer_id)

    async def finish(self) -> None:
        """The connection ended and its stream is closed (``Endpoint.attach``)."""
        await finish(self.main, self)

    def finish_now(self) -> bool:
        """:meth:`finish` at once, if it has nothing to wait for and no hook to run;
        whether it ran (``Endpoint.attach``). ``on_disconnect`` hooks keep running
        in a task, after what the renderer's last frames started."""
        if self.contents._process is not None or self.main._disconnect_hooks:
            return False
        finished(self.main, self, None)
        return True

    def find_listeners(self, channel: str) -> tuple[Callback, ...]:
        ipc = self.contents._ipc
        general = self.main.take_listeners(channel)
        if ipc is None:
            return general
        scoped = ipc.take_listeners(channel)
        return scoped + general if scoped else general

    def find_handler(self, channel: str) -> Callback | None:
        ipc = self.contents._ipc
        return (ipc.take_handler(channel) if ipc is not None else None) or self.main.take_handler(
            channel
        )

    def make_event(self, channel: str, slot: ReplySlot | None) -> IpcMainEvent:
        return IpcMainEvent(channel, self.contents, slot)

    def stop_waiting(self) -> None:
        """Its handshake is over (or it ended): it no longer counts as waiting."""
        if self.waiting is not None:
            self.waiting.links.pop(self, None)
            self.waiting = None

    def handshake_completed(self, event: HandshakeCompleted) -> None:
        self.stop_waiting()
        if not self.contents.process_id:
            self.contents.process_id = event.process_id
        self.main._add_renderer(self.contents)
        self._handshake_over()
        self.main._run_hooks(self.main._connect_hooks, self.contents)

    def terminated(self, event: ConnectionTerminated) -> None:
        # Gone from get_all_web_contents()/from_id() at once; on_disconnect
        # hooks run later, once a spawned child has been reaped.
        self.connected = self.main._remove_renderer(self.contents)
        self.stop_waiting()
        self._handshake_over()
        if self.contents._port_sink is not None:
            self.main._ports.sink_gone(self.contents._port_sink)

    # ports and checks

    def receive_ports(self, refs: Sequence[PortRef]) -> list[Any]:
        return self.main._ports.land(self.contents._sink(), refs)

    def port_event(self, event: PortMessageReceived | PortClosed) -> None:
        sink = self.contents._sink()
        if isinstance(event, PortMessageReceived):
            self.main._ports.port_message(sink, event)
        else:
            self.main._ports.port_closed(sink, event)

    def install_gate(self, endpoint: Endpoint, *, guarded: bool = False) -> None:
        """Give ``endpoint`` its gate if anything is to be checked (or ``guarded``).

        Without allowlists or guards there is no gate, and nothing to pay per
        message; ``IpcMain.add_guard`` installs one later. Once there, it
        stays: messages waiting for an async guard keep their order.
        """
        # The allowlists are fixed when the renderer connects.
        listed = self.main.allowed_channels is not None or self.allowed is not None
        if endpoint.gate is None and (listed or guarded or self.main._guards.callbacks):
            endpoint.gate = Gatekeeper(
                endpoint,
                self.is_allowed if listed else None,
                self.main._guards,
                self.guard_event,
            )

    def is_allowed(self, channel: str) -> bool:
        main_allowed = self.main.allowed_channels
        return (main_allowed is None or channel in main_allowed) and (
            self.allowed is None or channel in self.allowed
        )

    def guard_event(
        self, event: RequestReceived | MessageReceived, ports: list[Any] | None
    ) -> IpcMainEvent | IpcMainInvokeEvent:
        size = len(event.args)  # what decoding them would cost: a guard may refuse first
        if isinstance(event, RequestReceived) and event.kind is not RequestKind.SYNC:
            return IpcMainInvokeEvent(event.channel, self.contents, size)
        return IpcMainEvent(event.channel, self.contents, None, ports or [], args_size=size)


async def serve(
    main: IpcMain,
    stream: anyio.abc.ByteStream,
    token: str,
    process_id: int,
    process: anyio.abc.Process | None,
    task_status: anyio.abc.TaskStatus[Link] | None = None,
    *,
    tcp: bool = False,
    allowed: frozenset[str] | None = None,
    accepted: bool | Waiting = False,
    renderer_id: int | None = None,
) -> None:
    """Run one renderer's connection from handshake to the end, then clean up.

    ``accepted``: it came through a listener, so it counts against
    ``max_pending_handshakes`` until it has shown the token (or, given a
    ``Waiting``, against that one's limit). Its renderer id is taken only
    then (``admit``), unless ``renderer_id`` gives it (a replica's ids are
    unique across its app).
    """
    if accepted and len(main._contents) >= main.max_connections:
        await refuse(main, stream, CloseCode.TOO_MANY_CONNECTIONS, too_many(main))
        return
    contents = WebContents(main, 0, process_id)  # the id comes with the handshake
    contents._process = process
    link = Link(main, contents, allowed)
    link.renderer_id = renderer_id
    conn = Connection(
        Role.MAIN,
        token=token,
        admit=link.admit,
        max_frame_size=frame_limit(main.max_frame_size, stream),
        new_buffer=body_buffer,
    )
    main._links.add(link)
    if accepted:
        waiting = main._waiting if accepted is True else accepted
        make_room_for_a_handshake(main, waiting)
        waiting.links[link] = None
        link.waiting = waiting

    def endpoint_in(tg: anyio.abc.TaskGroup) -> Endpoint:
        endpoint = contents._endpoint = Endpoint(
            conn,
            stream,
            tg,
            link,
            name="a renderer before its handshake",
            send_tracebacks=main.send_tracebacks,
            max_in_flight=main.max_in_flight,
            send_timeout=main.send_timeout,
            heartbeat_interval=heartbeat_for(main.heartbeat_interval, tcp, stream),
            heartbeat_timeout=main.heartbeat_timeout,
            sweeper=main._sweeper,
        )
        link.install_gate(endpoint)
        if main._tg is not None:  # else main is exiting: it closes every connection
            main._handshakes.watch(link, main._tg)
        return endpoint

    if hasattr(stream, "deliver_to") and main._tg is not None:
        # The fast path: the stream hands reads to the endpoint from the
        # loop's callback, and this task ends here. An idle connection then
        # costs no task at all (issue 12); its handlers, its writer when it
        # needs one and its end run in IpcMain's task group.
        try:
            endpoint = endpoint_in(main._tg)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                await finish(main, link)
            raise
        if task_status is not None:
            task_status.started(link)
        endpoint.attach(link.finish, link.finish_now)
        return
    try:
        async with anyio.create_task_group() as tg:
            endpoint = endpoint_in(tg)
            if task_status is not None:
                task_status.started(link)
            try:
                await endpoint.run()
            finally:
                tg.cancel_scope.cancel()
    except Exception:
        logger.exception("internal error serving renderer %d", contents.id)
    finally:
        with anyio.CancelScope(shield=True):
            await finish(main, link)


def too_many(main: IpcMain) -> str:
    """What a renderer refused at ``max_connections`` is told."""
    return f"too many connections: main serves at most {main.max_connections} renderers"


def admit(main: IpcMain, link: Link, renderer_id: int | None = None) -> int:
    """The core accepted ``link``'s token: give it a renderer id, if there is room."""
    if len(main._contents) >= main.max_connections:
        raise HandshakeRefused(too_many(main), CloseCode.TOO_MANY_CONNECTIONS)
    link.contents.id = renderer_id = renderer_id or next(main._ids)
    if link.contents._endpoint is not None:
        link.contents._endpoint.name = f"renderer {renderer_id}"
    return renderer_id


def make_room_for_a_handshake(main: IpcMain, waiting: Waiting) -> None:
    """At ``waiting``'s limit, drop the connection that has waited longest.

    The oldest rather than the newest: a renderer with the token sends its
    Hello at once, so it is through long before it becomes the oldest,
    while idle sockets cannot hold the door shut by merely staying open.
    """
    limit = waiting.limit()
    while len(waiting.links) >= limit:
        oldest = next(iter(waiting.links))
        oldest.stop_waiting()
        if main._tg is not None:
            main._tg.start_soon(
                _drop_waiting,
                oldest,
                "too many connections waiting for their handshake: main holds at most "
                f"{limit}, and this one had waited longest",
            )


async def _drop_waiting(link: Link, reason: str) -> None:
    """Close a connection dropped from its ``Waiting``, unless its Hello came first."""
    endpoint = link.contents._endpoint
    if endpoint is not None and not link.handshake_over:
        await endpoint.close(CloseCode.TOO_MANY_CONNECTIONS, reason)


async def finish(main: IpcMain, link: Link) -> None:
    """The connection ended: reap a spawned child, set its details, forget it, run the hooks."""
    exit_code = None
    process = link.contents._process
    if process is not None:
        if link.connected:
            exit_code = await reap(main, process)
        else:
            # Never a renderer (no handshake): spawn raises, so nobody
            # else would ever end it. If we closed the connection (timeout,
            # spawn cancelled) it has nothing to wait for: end it now.
            endpoint = link.contents._endpoint
            termination = endpoint.termination if endpoint is not None else None
            ours = termination is None or not termination.remote
            exit_code = await stop(process, grace=0.0 if ours else 2.0)
    finished(main, link, exit_code)


def finished(main: IpcMain, link: Link, exit_code: int | None) -> None:
    """``finish`` once any child is reaped: the details, forget it, run the hooks."""
    contents = link.contents
    endpoint = contents._endpoint
    termination = endpoint.termination if endpoint is not None else None
    contents.disconnect_details = disconnect_details(termination, exit_code)
    main._links.discard(link)
    link.stop_waiting()
    main._remove_renderer(contents)
    contents._finished()
    if link.connected:
        main._run_hooks(main._disconnect_hooks, contents, contents.disconnect_details)
