"""The main process: ``IpcMain``, one ``WebContents`` per renderer, and their events."""

from __future__ import annotations

import inspect
import itertools
import os
import secrets
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from ._buffers import body_buffer
from ._calls import ReplySlot
from ._endpoint import Endpoint, logger
from ._errors import ConnectionClosedError
from ._events import (
    ConnectionTerminated,
    HandshakeCompleted,
    MessageReceived,
    PortClosed,
    PortMessageReceived,
    RequestReceived,
)
from ._framestream import FrameStream, frame_limit
from ._guards import Gatekeeper, Guards
from ._liveness import Sweeper
from ._portroute import MainPortRouter, Sink
from ._protocol import OPEN, Connection, HandshakeRefused, Role, State, prepare_message
from ._registry import Callback, Registry, check_channel
from ._streams import DEFAULT_WINDOW, IpcStream
from ._transport import (
    ENV_FD,
    ENV_TOKEN,
    CreatedListener,
    child_socketpair,
    create_listener,
    peer_pid,
    stream_from_socket,
)
from ._values import ENCODE_ERRORS, encode_error
from ._wire import (
    DEFAULT_MAX_FRAME_SIZE,
    INVOKE,
    CloseCode,
    PortRef,
    RequestKind,
    check_max_frame_size,
)
from .ports import MessagePortMain, check_transfer, current_host

if TYPE_CHECKING:
    from ._natsreplica import Replica
    from .renderer import IpcRenderer
    from .web import WebServer

__all__ = (
    "DisconnectDetails",
    "IpcMain",
    "IpcMainEvent",
    "IpcMainInvokeEvent",
    "Listener",
    "WebContents",
)

H = TypeVar("H", bound=Callable[..., Any])

DisconnectReason = Literal["clean-exit", "crashed", "killed", "connection-lost", "protocol-error"]

_UNSET: Any = object()


class DisconnectDetails(msgspec.Struct, frozen=True):
    """Why a renderer went away, passed to ``on_disconnect`` hooks.

    Attributes:
        reason: ``"clean-exit"``, ``"crashed"``, ``"killed"``, ``"connection-lost"``
            or ``"protocol-error"``.
        exit_code: for spawned children, as ``subprocess`` reports it (negative
            signal number when killed); ``None`` otherwise or if still running.
        message: the connection's own account, for logs.
    """

    reason: DisconnectReason
    exit_code: int | None = None
    message: str = ""


class IpcMainEvent(msgspec.Struct, eq=False):
    """What an ``ipc_main.on`` listener receives with each message.

    Attributes:
        channel: the channel the message came on.
        sender: the ``WebContents`` of the renderer that sent it.
        process_id: that renderer's process id.
        ports: message ports sent along (``post_message``), else empty.
        args_size: in a guard (``add_guard``), the size in bytes of the still
            encoded arguments, for a per-channel size limit; else 0.
    """

    # A msgspec Struct for its speed, not for encoding: one is made per message,
    # and a Struct is built in C (half the time of a slotted class's __init__).
    channel: str
    sender: WebContents
    _slot: ReplySlot | None = None
    ports: list[Any] = []
    _return_value: Any = None
    args_size: int = 0

    @property
    def process_id(self) -> int:
        return self.sender.process_id

    @property
    def return_value(self) -> Any:
        """Set this to answer a ``send_sync``: the first assignment replies at once."""
        return self._return_value

    @return_value.setter
    def return_value(self, value: Any) -> None:
        if self._slot is not None and not self._slot.replied:
            self._return_value = value
            self._slot.set(value)
        elif self._slot is None:
            self._return_value = value

    async def reply(self, channel: str, *args: Any) -> None:
        """Send a message back to the sender; same as ``event.sender.send``."""
        await self.sender.send(channel, *args)

    def __repr__(self) -> str:
        return f"<IpcMainEvent channel={self.channel!r} sender={self.sender.id}>"


class IpcMainInvokeEvent(msgspec.Struct, eq=False):
    """What an ``ipc_main.handle`` handler receives with each ``invoke``.

    Attributes:
        channel: the channel invoked.
        sender: the ``WebContents`` of the renderer that invoked it.
        args_size: as for :class:`IpcMainEvent` (guards only).
    """

    channel: str  # (a Struct for the speed of making one per call, as IpcMainEvent)
    sender: WebContents
    args_size: int = 0

    @property
    def process_id(self) -> int:
        return self.sender.process_id

    def __repr__(self) -> str:
        return f"<IpcMainInvokeEvent channel={self.channel!r} sender={self.sender.id}>"


class WebContents:
    """One connected renderer, as main sees it.

    Attributes:
        id: unique among the renderers of one ``IpcMain``, never reused.
        process_id: the renderer's process id.
        ipc: listeners and handlers for messages from this renderer only; they
            run before ``ipc_main``'s, and a handler here answers ``invoke``
            instead of ``ipc_main``'s.
    """

    def __init__(self, main: IpcMain, id: int, process_id: int) -> None:
        self.id = id
        self.process_id = process_id
        self._ipc: Registry | None = None  # made when first asked for (issue 12)
        self._main = main
        self._endpoint: Endpoint | None = None
        self._process: anyio.abc.Process | None = None
        # Set once the renderer is gone; the Event is made only if someone waits.
        self._is_finished = False
        self._finished_event: anyio.Event | None = None
        self._port_sink: Sink | None = None
        self.disconnect_details: DisconnectDetails | None = None

    @property
    def ipc(self) -> Registry:
        """Listeners and handlers for this renderer only (see the class docstring)."""
        if self._ipc is None:
            self._ipc = Registry()
        return self._ipc

    def _finished(self) -> None:
        self._is_finished = True
        if self._finished_event is not None:
            self._finished_event.set()

    async def _wait_finished(self) -> None:
        if not self._is_finished:
            if self._finished_event is None:
                self._finished_event = anyio.Event()
            await self._finished_event.wait()

    def _open_endpoint(self) -> Endpoint:
        endpoint = self._endpoint
        if endpoint is None or endpoint.conn.state is not OPEN:
            reason = endpoint.reason if endpoint is not None else "not connected"
            raise ConnectionClosedError(f"renderer {self.id} is gone ({reason})")
        return endpoint

    async def send(self, channel: str, *args: Any) -> None:
        """Send a message to the renderer's ``ipc_renderer.on(channel)`` listeners.

        Raises:
            ConnectionClosedError: the renderer is gone.
            SerializationError: an argument cannot be encoded; nothing was sent.
        """
        check_channel(channel)
        endpoint = self._open_endpoint()
        if endpoint.outbox.queue_message(channel, args):
            await endpoint.outbox.flush()

    async def invoke(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """Call the renderer's ``ipc_renderer.handle(channel)`` and return its result."""
        check_channel(channel)
        return await self._open_endpoint().calls.request(INVOKE, channel, args, timeout)

    async def post_message(
        self, channel: str, message: Any, transfer: Iterable[MessagePortMain] = ()
    ) -> None:
        """Send ``message`` with the ports in ``transfer`` to ``ipc_renderer.on(channel)``.

        The renderer's listeners get ``(event, message)`` with the ports in
        ``event.ports``; the ports here are neutered. If the renderer has no
        listener on ``channel``, it closes the ports (their peers see "close").

        Raises:
            TypeError: a bad ``transfer`` (the message names the index).
            SerializationError: ``message`` cannot be encoded; nothing is sent.
            ConnectionClosedError: the renderer is gone.
        """
        check_channel(channel)
        router = self._main._ports
        ports = check_transfer(transfer, None, router)
        await self._open_endpoint().outbox.post_message(
            channel,
            message,
            lambda: router.send_out([router.claim(port) for port in ports], self._sink()),
        )

    def stream(self, channel: str, *args: Any, window: int = DEFAULT_WINDOW) -> IpcStream:
        """Iterate what the renderer's async-generator ``handle(channel)`` yields.

        ``window`` items at most are buffered or in flight: a slow loop here
        pauses the generator there. See :class:`ipcbus.IpcStream`.

        Raises:
            ConnectionClosedError: the renderer is gone.
        """
        check_channel(channel)
        return IpcStream(self._open_endpoint(), channel, args, window)

    def _sink(self) -> Sink:
        endpoint = self._endpoint
        assert endpoint is not None
        if self._port_sink is None or self._port_sink.endpoint is not endpoint:
            self._port_sink = Sink(endpoint)
        return self._port_sink

    def is_destroyed(self) -> bool:
        """Whether the renderer's connection has ended."""
        return self._endpoint is None or self._endpoint.conn.state is State.CLOSED

    async def close(self) -> None:
        """Close the connection to this renderer (a spawned child is left to exit)."""
        if self._endpoint is not None:
            await self._endpoint.close(CloseCode.NORMAL, "closed by main")
        await self._wait_finished()

    async def wait_closed(self) -> None:
        """Return once the renderer is gone (and, if spawned, its process has exited)."""
        await self._wait_finished()

    def __repr__(self) -> str:
        state = "destroyed" if self.is_destroyed() else "live"
        return f"<WebContents id={self.id} pid={self.process_id} {state}>"


class _Link:
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
        self.connected = False  # completed the handshake (and so was registered)

    def _handshake_over(self) -> None:
        self.handshake_over = True
        if self._handshake_event is not None:
            self._handshake_event.set()

    async def wait_handshake(self) -> None:
        """Return once the handshake has completed, or the connection ended."""
        if not self.handshake_over:
            if self._handshake_event is None:
                self._handshake_event = anyio.Event()
            await self._handshake_event.wait()

    def admit(self) -> int:
        """The core accepted the token (``Connection(admit=...)``)."""
        return self.main._admit(self, self.renderer_id)

    async def finish(self) -> None:
        """The connection ended and its stream is closed (``Endpoint.attach``)."""
        await self.main._finish(self)

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

    def handshake_completed(self, event: HandshakeCompleted) -> None:
        self.main._pending.pop(self, None)
        if not self.contents.process_id:
            self.contents.process_id = event.process_id
        self.main._contents[self.contents.id] = self.contents
        self._handshake_over()
        self.main._run_hooks(self.main._connect_hooks, self.contents)

    def terminated(self, event: ConnectionTerminated) -> None:
        # Gone from get_all_web_contents()/from_id() at once; on_disconnect
        # hooks run later, once a spawned child has been reaped.
        self.connected = self.main._contents.pop(self.contents.id, None) is not None
        self.main._pending.pop(self, None)
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


class Listener:
    """A listening socket that renderers connect to.

    Attributes:
        address: ``"unix:/path"`` or ``"tcp://host:port"`` (the real port).
        token: what a renderer must present to be accepted.
    """

    def __init__(self, created: CreatedListener, token: str) -> None:
        self.address = str(created.address)
        self.token = token
        self.allowed_channels: frozenset[str] | None = None
        self._created = created
        self._scope = anyio.CancelScope()
        self._done = anyio.Event()

    def close(self) -> None:
        """Stop accepting renderers and remove the socket file; connected ones stay."""
        self._scope.cancel()
        self._created.remove_files()

    async def aclose(self) -> None:
        """As :meth:`close`, and wait until the listening socket is closed."""
        self.close()
        await self._done.wait()

    def __repr__(self) -> str:
        return f"<Listener {self.address}>"


class _Joined(Protocol):
    """An app this main serves as a replica, through a broker (``IpcMain.join``)."""

    async def stop_accepting(self) -> None: ...
    def check_broadcast(self, frame: bytes) -> None: ...
    async def broadcast(self, frame: bytes) -> None: ...


class IpcMain(Registry):
    """The main process's side of the bus (Electron's ``ipcMain``).

    Args:
        max_frame_size: largest frame accepted from a renderer, in bytes.
        handshake_timeout: seconds a new connection has to present its token.
        shutdown_grace: seconds running handlers get to finish when the
            ``async with`` block ends, and spawned children to exit, before
            they are cancelled or terminated.
        send_tracebacks: include handler tracebacks in ``RemoteError``.
        max_in_flight: per renderer, how many handlers and async listeners
            may run at once; at the limit main stops reading that renderer's
            socket until one finishes (docs/reliability.md, backpressure).
        max_connections: renderers connected at once (past the handshake);
            more are refused.
        max_pending_handshakes: per ``IpcMain``, connections accepted from
            listeners that have not completed the handshake yet. One more
            drops the oldest of them, so idle or slow unauthenticated sockets
            cannot keep renderers with the token out (``spawn`` and
            ``connect_local`` do not count).
        heartbeat_interval: seconds between pings to each renderer, ``None``
            for none; ``"auto"``: 5 s for TCP connections, none for unix
            sockets and spawned children (the kernel reports their death).
        heartbeat_timeout: a renderer silent this long is dropped
            (default: three intervals).
        send_timeout: a write to a renderer that makes no progress for this
            long (it stopped reading) closes its connection; ``None``: wait.
        allowed_channels: if given, the only channels renderers may send,
            invoke or stream on; the rest are rejected before their
            arguments are decoded (SPEC section 9).
    """

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        handshake_timeout: float = 10.0,
        shutdown_grace: float = 5.0,
        send_tracebacks: bool = True,
        max_in_flight: int = 256,
        max_connections: int = 1024,
        max_pending_handshakes: int = 64,
        heartbeat_interval: float | Literal["auto"] | None = "auto",
        heartbeat_timeout: float | None = None,
        send_timeout: float | None = 30.0,
        allowed_channels: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        if min(max_in_flight, max_connections, max_pending_handshakes) < 1:
            raise ValueError(
                "max_in_flight, max_connections and max_pending_handshakes must be >= 1"
            )
        check_max_frame_size(max_frame_size)
        self.allowed_channels = _channel_set(allowed_channels)
        self._guards = Guards()
        self._ports = MainPortRouter(lambda: self._tg)
        self._host_token: Any = None
        self.max_frame_size = max_frame_size
        self.handshake_timeout = handshake_timeout
        self.shutdown_grace = shutdown_grace
        self.send_tracebacks = send_tracebacks
        self.max_in_flight = max_in_flight
        self.max_connections = max_connections
        self.max_pending_handshakes = max_pending_handshakes
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.send_timeout = send_timeout
        self._contents: dict[int, WebContents] = {}
        self._links: set[_Link] = set()
        # Accepted connections before their handshake, oldest first (a dict keeps order).
        self._pending: dict[_Link, None] = {}
        self._listeners_open: set[Listener | WebServer] = set()
        self._joined: list[_Joined] = []  # apps served as a replica (join)
        self._ids = itertools.count(1)
        self._connect_hooks: list[Callable[..., Any]] = []
        self._disconnect_hooks: list[Callable[..., Any]] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._sweeper: Sweeper | None = None  # one liveness watchdog for all connections
        self._closing = False

    # ---- lifecycle -----------------------------------------------------

    async def __aenter__(self) -> IpcMain:
        if self._tg is not None:
            raise RuntimeError("this IpcMain is already running")
        self._closing = False
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._sweeper = Sweeper(tg)
        self._host_token = current_host.set(self._ports.host)  # ports made here deliver here
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg = self._tg
        assert tg is not None
        try:
            with anyio.CancelScope(shield=True):
                await self._shutdown()
        finally:
            tg.cancel_scope.cancel()
            self._tg = None
            with suppress(ValueError):  # exited in another context than entered
                current_host.reset(self._host_token)
            # The body's own exception is not handed to the task group, so it
            # propagates as itself rather than inside an ExceptionGroup.
            await tg.__aexit__(None, None, None)
        return None

    async def _shutdown(self) -> None:
        self._closing = True
        for joined in list(self._joined):
            await joined.stop_accepting()  # no new renderer is assigned to us
        for listener in list(self._listeners_open):
            listener.close()
        links = list(self._links)
        with anyio.move_on_after(self.shutdown_grace):
            for link in links:
                if link.contents._endpoint is not None:
                    await link.contents._endpoint.wait_idle()
        async with anyio.create_task_group() as tg:
            for link in links:
                tg.start_soon(self._close_link, link)

    async def _close_link(self, link: _Link) -> None:
        endpoint = link.contents._endpoint
        if endpoint is not None:
            endpoint.cancel_handlers()
            await endpoint.wait_idle()
            await endpoint.close(CloseCode.SHUTDOWN, "the main process is shutting down")
        with anyio.move_on_after(self.shutdown_grace + 5):
            await link.contents._wait_finished()

    def _require_running(self, what: str) -> anyio.abc.TaskGroup:
        if self._tg is None or self._closing:
            raise RuntimeError(
                f"IpcMain.{what}() needs a running IpcMain: call it inside 'async with ipc_main:'"
            )
        return self._tg

    # ---- renderers -----------------------------------------------------

    async def listen(
        self,
        address: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        allowed_channels: Iterable[str] | None = None,
    ) -> Listener:
        """Start accepting renderers; see SPEC section 2 for the address forms.

        Without an address: a unix socket in a new private (0700) directory,
        removed when the listener closes. Without a token: a random one.
        ``allowed_channels`` narrows what renderers connecting here may use.
        """
        tg = self._require_running("listen")
        created = await create_listener(
            address, ssl_context, self.handshake_timeout, refusal=_OUT_OF_DESCRIPTORS
        )
        listener = Listener(created, token if token is not None else secrets.token_hex(32))
        listener.allowed_channels = _channel_set(allowed_channels)
        self._listeners_open.add(listener)
        tg.start_soon(self._accept_loop, listener, tg)
        return listener

    async def serve_web(
        self,
        static_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        ssl: ssl.SSLContext | None = None,
        allowed_origins: Iterable[str] | None = None,
        allowed_channels: Iterable[str] | None = None,
        content_security_policy: str | None = "script-src 'self'",
    ) -> WebServer:
        """Serve web pages as renderers (SPEC section 10, docs/web.md); needs ``ipcbus[web]``.

        Serves ``static_dir`` (``index.html`` at ``/``), the JS client at
        ``/ipcbus.js`` with its types at ``/ipcbus.d.ts``, and the WebSocket
        pages connect to at ``/ipcbus``. Each page that connects with the
        token is a renderer with a ``WebContents``. ``allowed_origins`` adds
        browser origins besides the server's own that may open the
        WebSocket; ``allowed_channels`` narrows what pages may use;
        ``content_security_policy`` is sent with every response (``None``:
        no header). Open ``WebServer.url``.

        Raises:
            RuntimeError: not inside ``async with ipc_main:``.
            ValueError: a non-loopback ``host`` without ``ssl``.
            ImportError: the ``web`` extra is not installed.
        """
        self._require_running("serve_web")
        try:
            from .web import _server
        except ImportError as exc:
            raise ImportError(
                f"IpcMain.serve_web() needs the web extra ({exc}): pip install 'ipcbus[web]'"
            ) from exc
        return await _server.start(
            self,
            None if static_dir is None else os.fspath(static_dir),
            host=host,
            port=port,
            token=token if token is not None else secrets.token_hex(32),
            ssl=ssl,
            allowed_origins=allowed_origins,
            allowed_channels=_channel_set(allowed_channels),
            content_security_policy=content_security_policy,
        )

    async def join(
        self,
        url: str | list[str],
        *,
        app: str,
        token: str | None = None,
        allowed_channels: Iterable[str] | None = None,
        timeout: float = 10.0,
        **nats_options: Any,
    ) -> Replica:
        """Serve ``app``'s renderers as one of its replicas, joined through NATS.

        Returns once the server has confirmed the subscriptions, so a renderer
        connecting right after is served. ``nats_options`` go to
        ``nats.connect`` (user, password, token, nkeys_seed, tls, ...): the
        NATS server authenticates. ``token``, if given, is a shared ipcbus
        token every renderer of the app must present too. See docs/scale-out.md
        (subjects, permissions, liveness). Needs ``pip install 'ipcbus[nats]'``
        and the asyncio backend. ``allowed_channels`` narrows what the app's
        renderers may use here; ``timeout`` bounds reaching the server.

        Raises:
            ConnectionClosedError: the NATS server cannot be reached within
                ``timeout`` or refused the credentials.
        """
        from ._natsreplica import join

        self._require_running("join")
        return await join(
            self,
            url,
            app=app,
            token=token,
            allowed=_channel_set(allowed_channels),
            timeout=timeout,
            nats_options=nats_options,
        )

    async def _accept_loop(self, listener: Listener, tg: anyio.abc.TaskGroup) -> None:
        tcp = listener.address.startswith("tcp:")

        async def handle(stream: anyio.abc.ByteStream) -> None:
            await self._serve(
                stream,
                listener.token,
                peer_pid(stream) or 0,
                None,
                tcp=tcp,
                allowed=listener.allowed_channels,
                accepted=True,
            )

        try:
            with listener._scope:
                # Connections run in IpcMain's task group, not the listener's:
                # closing a listener stops accepting and leaves them connected.
                await listener._created.serve(handle, tg)
        finally:
            with anyio.CancelScope(shield=True):
                await listener._created.listener.aclose()
            listener._created.remove_files()
            self._listeners_open.discard(listener)
            listener._done.set()

    async def spawn(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        allowed_channels: Iterable[str] | None = None,
    ) -> WebContents:
        """Start ``argv`` as a renderer, already connected, and return its ``WebContents``.

        The child inherits one end of a socket pair; ``ipcbus.connect()`` with
        no address finds it. Returns once the child has connected.
        ``allowed_channels`` narrows the channels this renderer may use (on
        top of ``IpcMain(allowed_channels=...)``).

        Raises:
            ConnectionClosedError: the child exited, or did not connect within
                ``handshake_timeout``. A child that never completed the
                handshake is terminated (killed after 1 s) and reaped first,
                also when ``spawn`` is cancelled.
        """
        tg = self._require_running("spawn")
        token = secrets.token_hex(32)
        ours, theirs = child_socketpair()
        child_env = dict(os.environ if env is None else env)
        child_env[ENV_FD] = str(theirs.fileno())
        child_env[ENV_TOKEN] = token
        try:
            process = await anyio.open_process(
                [os.fspath(a) for a in argv],
                stdin=None,
                stdout=None,
                stderr=None,
                env=child_env,
                cwd=cwd,
                pass_fds=[theirs.fileno()],
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            stream = await stream_from_socket(ours)
            link: _Link = await tg.start(
                self._serve_started, stream, token, process, _channel_set(allowed_channels)
            )
        except BaseException:
            ours.close()
            with anyio.CancelScope(shield=True):
                await _stop(process)  # nothing serves it yet: it is ours to end
            raise
        try:
            with anyio.move_on_after(self.handshake_timeout):
                await link.wait_handshake()
        except BaseException:
            # Cancelled: end the half-made connection; _finish kills and reaps
            # the child, and we wait for that so that no process outlives us.
            with anyio.CancelScope(shield=True):
                if (endpoint := link.contents._endpoint) is not None:
                    await endpoint.close(CloseCode.PROTOCOL_ERROR, "spawn was cancelled")
                await link.contents.wait_closed()
            raise
        endpoint = link.contents._endpoint
        if endpoint is None or endpoint.conn.state is not OPEN:
            if endpoint is not None and endpoint.conn.state is State.HANDSHAKE:
                await endpoint.close(CloseCode.PROTOCOL_ERROR, "no handshake in time")
            await link.contents.wait_closed()
            details = link.contents.disconnect_details
            raise ConnectionClosedError(
                f"renderer {argv!r} did not connect: {details.message if details else 'unknown'}"
                + (
                    f" (exit code {details.exit_code})"
                    if details and details.exit_code is not None
                    else ""
                )
            )
        return link.contents

    @asynccontextmanager
    async def connect_local(self) -> AsyncIterator[IpcRenderer]:
        """An ``IpcRenderer`` in this process, connected through a real socket pair."""
        from .renderer import IpcRenderer

        tg = self._require_running("connect_local")
        token = secrets.token_hex(32)
        ours, theirs = child_socketpair()
        main_stream = await stream_from_socket(ours)
        await tg.start(self._serve_started, main_stream, token, None)
        renderer = IpcRenderer()
        async with renderer._connect_stream(await stream_from_socket(theirs), token):
            yield renderer

    async def _serve_started(
        self,
        stream: anyio.abc.ByteStream,
        token: str,
        process: anyio.abc.Process | None,
        allowed: frozenset[str] | None = None,
        *,
        task_status: anyio.abc.TaskStatus[_Link],
    ) -> None:
        pid = process.pid if process is not None else os.getpid()
        await self._serve(stream, token, pid, process, task_status, allowed=allowed)

    async def _serve(
        self,
        stream: anyio.abc.ByteStream,
        token: str,
        process_id: int,
        process: anyio.abc.Process | None,
        task_status: anyio.abc.TaskStatus[_Link] | None = None,
        *,
        tcp: bool = False,
        allowed: frozenset[str] | None = None,
        accepted: bool = False,
        renderer_id: int | None = None,
    ) -> None:
        """Run one renderer's connection from handshake to the end, then clean up.

        ``accepted``: it came through a listener, so it counts against
        ``max_pending_handshakes`` until it has shown the token. Its renderer
        id is taken only then (``_admit``), unless ``renderer_id`` gives it
        (a replica's ids are unique across its app).
        """
        if accepted and len(self._contents) >= self.max_connections:
            await _refuse(stream, CloseCode.TOO_MANY_CONNECTIONS, self._too_many())
            return
        contents = WebContents(self, 0, process_id)  # the id comes with the handshake
        contents._process = process
        link = _Link(self, contents, allowed)
        link.renderer_id = renderer_id
        conn = Connection(
            Role.MAIN,
            token=token,
            admit=link.admit,
            max_frame_size=frame_limit(self.max_frame_size, stream),
            new_buffer=body_buffer,
        )
        self._links.add(link)
        if accepted:
            self._make_room_for_a_handshake()
            self._pending[link] = None

        def endpoint_in(tg: anyio.abc.TaskGroup) -> Endpoint:
            endpoint = contents._endpoint = Endpoint(
                conn,
                stream,
                tg,
                link,
                name="a renderer before its handshake",
                send_tracebacks=self.send_tracebacks,
                max_in_flight=self.max_in_flight,
                send_timeout=self.send_timeout,
                heartbeat_interval=_heartbeat(self.heartbeat_interval, tcp, stream),
                heartbeat_timeout=self.heartbeat_timeout,
                sweeper=self._sweeper,
            )
            link.install_gate(endpoint)
            endpoint.start_soon(self._handshake_watchdog, link, endpoint)
            return endpoint

        if hasattr(stream, "deliver_to") and self._tg is not None:
            # The fast path: the stream hands reads to the endpoint from the
            # loop's callback, and this task ends here. An idle connection then
            # costs no task at all (issue 12); its handlers, its writer when it
            # needs one and its end run in IpcMain's task group.
            try:
                endpoint = endpoint_in(self._tg)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                    await self._finish(link)
                raise
            if task_status is not None:
                task_status.started(link)
            endpoint.attach(link.finish)
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
                await self._finish(link)

    def _too_many(self) -> str:
        return f"too many connections: main serves at most {self.max_connections} renderers"

    def _admit(self, link: _Link, renderer_id: int | None = None) -> int:
        """The core accepted ``link``'s token: give it a renderer id, if there is room."""
        if len(self._contents) >= self.max_connections:
            raise HandshakeRefused(self._too_many(), CloseCode.TOO_MANY_CONNECTIONS)
        link.contents.id = renderer_id = renderer_id or next(self._ids)
        if link.contents._endpoint is not None:
            link.contents._endpoint.name = f"renderer {renderer_id}"
        return renderer_id

    def _make_room_for_a_handshake(self) -> None:
        """At ``max_pending_handshakes``, drop the connection that has waited longest.

        The oldest rather than the newest: a renderer with the token sends its
        Hello at once, so it is through long before it becomes the oldest,
        while idle sockets cannot hold the door shut by merely staying open.
        """
        while len(self._pending) >= self.max_pending_handshakes:
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            endpoint = oldest.contents._endpoint
            if endpoint is not None and self._tg is not None:
                self._tg.start_soon(
                    endpoint.close,
                    CloseCode.TOO_MANY_CONNECTIONS,
                    "too many connections waiting for their handshake: main holds at most "
                    f"{self.max_pending_handshakes}, and this one had waited longest",
                )

    async def _handshake_watchdog(self, link: _Link, endpoint: Endpoint) -> None:
        with anyio.move_on_after(self.handshake_timeout):
            # Set by the handshake or by the end of the connection: either way
            # this task (and its timer) is gone at once, not handshake_timeout later.
            await link.wait_handshake()
            return
        if endpoint.conn.state is State.HANDSHAKE:
            await endpoint.close(
                CloseCode.PROTOCOL_ERROR,
                f"no handshake within {self.handshake_timeout} s",
            )

    async def _finish(self, link: _Link) -> None:
        contents = link.contents
        endpoint = contents._endpoint
        termination = endpoint.termination if endpoint is not None else None
        exit_code = None
        process = contents._process
        if process is not None:
            if link.connected:
                exit_code = await self._reap(process)
            else:
                # Never a renderer (no handshake): spawn raises, so nobody
                # else would ever end it. If we closed the connection (timeout,
                # spawn cancelled) it has nothing to wait for: end it now.
                ours = termination is None or not termination.remote
                exit_code = await _stop(process, grace=0.0 if ours else 2.0)
        contents.disconnect_details = _details(termination, exit_code)
        self._links.discard(link)
        self._pending.pop(link, None)
        self._contents.pop(contents.id, None)
        contents._finished()
        if link.connected:
            self._run_hooks(self._disconnect_hooks, contents, contents.disconnect_details)

    async def _reap(self, process: anyio.abc.Process) -> int | None:
        """Wait for a child that lost its connection; terminate, then kill, if it lingers."""
        grace = self.shutdown_grace if self._closing else 2.0
        with anyio.move_on_after(grace):
            return await process.wait()
        if not self._closing:
            return None  # it closed its connection but keeps running: its business
        with suppress(ProcessLookupError):
            process.terminate()
        with anyio.move_on_after(2):
            return await process.wait()
        with suppress(ProcessLookupError):
            process.kill()
        return await process.wait()

    def get_all_web_contents(self) -> list[WebContents]:
        """Every connected renderer, oldest first."""
        return list(self._contents.values())

    def from_id(self, id: int) -> WebContents | None:
        """The connected renderer with this id, or ``None``."""
        return self._contents.get(id)

    async def broadcast(self, channel: str, *args: Any) -> None:
        """``send`` to every live renderer, skipping the ones that are closed.

        The message is encoded once and queued on every connection before any
        write is awaited, so one slow renderer does not delay the others'
        copy. Like ``send``, it returns once the copies are queued, and waits
        only for the connections that have more than 256 KiB unsent
        (backpressure), until their writer has handed it to the socket.

        Raises:
            SerializationError: an argument cannot be encoded; nothing was sent.
        """
        check_channel(channel)
        try:
            frame = prepare_message(channel, args)
        except ENCODE_ERRORS as exc:
            raise encode_error("broadcast", channel, args, exc) from None
        for joined in self._joined:
            joined.check_broadcast(frame)  # too large for the broker: nothing is sent
        await self._broadcast_frame(frame)
        for joined in self._joined:
            await joined.broadcast(frame)  # the app's renderers on the other replicas

    async def _broadcast_frame(self, frame: bytes) -> None:
        """Queue a prepared Message frame on every live renderer of this main."""
        queued = [
            endpoint
            for contents in list(self._contents.values())
            if (endpoint := contents._endpoint) is not None
            and endpoint.outbox.queue_prepared(frame)
        ]
        await anyio.lowlevel.checkpoint()  # the writes go out on this loop turn
        for endpoint in queued:
            if endpoint.outbox.congested:
                await endpoint.outbox.flush_quietly()  # a failed one belongs to a renderer now gone

    # ---- guards --------------------------------------------------------

    def add_guard(self, fn: H) -> H:
        """Run ``fn(event)`` before any listener or handler of any channel.

        ``fn`` may be plain or ``async``; it sees ``event.channel``,
        ``event.sender``, ``event.process_id`` and ``event.args_size`` (an
        ``IpcMainEvent`` for send, send_sync and post_message, an
        ``IpcMainInvokeEvent`` for invoke and stream), never the arguments,
        which are not decoded yet: a guard that refuses large ones per channel
        spares main the decoding (docs/reliability.md). Raising rejects the
        message: an invoke, send_sync or stream caller gets ``RemoteError``
        with the guard's exception; a send is dropped and logged. Guards run
        in registration order. Usable as a decorator; returns ``fn``.
        """
        guards = self._guards
        guards.callbacks = (*guards.callbacks, Callback(fn, once=False))
        for link in self._links:
            if (endpoint := link.contents._endpoint) is not None:
                link.install_gate(endpoint, guarded=True)
        return fn

    def remove_guard(self, fn: Callable[..., Any]) -> None:
        """Remove the most recent registration of the guard ``fn``, if any."""
        guards = self._guards
        current = guards.callbacks
        for i in range(len(current) - 1, -1, -1):
            if current[i].fn == fn:
                guards.callbacks = current[:i] + current[i + 1 :]
                return

    # ---- hooks ---------------------------------------------------------

    def on_connect(self, fn: H) -> H:
        """Call ``fn(contents)`` when a renderer has connected (usable as a decorator)."""
        self._connect_hooks.append(_callable(fn))
        return fn

    def on_disconnect(self, fn: H) -> H:
        """Call ``fn(contents, details)`` when a renderer is gone (usable as a decorator)."""
        self._disconnect_hooks.append(_callable(fn))
        return fn

    def _run_hooks(self, hooks: list[Callable[..., Any]], *args: Any) -> None:
        for hook in list(hooks):
            try:
                result = hook(*args)
            except Exception:
                logger.exception("lifecycle hook %r raised", hook)
                continue
            if inspect.isawaitable(result) and self._tg is not None:
                self._tg.start_soon(_await_hook, hook, result)


async def _stop(process: anyio.abc.Process, grace: float = 0.0) -> int:
    """End a child: wait ``grace`` s, SIGTERM, 1 s more, SIGKILL; reap it; its exit code."""
    with anyio.move_on_after(grace):
        return await process.wait()
    with suppress(ProcessLookupError):
        process.terminate()
    with anyio.move_on_after(1.0):
        return await process.wait()
    with suppress(ProcessLookupError):
        process.kill()
    return await process.wait()


def _goodbye(code: CloseCode, reason: str) -> bytes:
    """The bytes of a lone Goodbye frame."""
    conn = Connection(Role.MAIN, token="")
    conn.close(code, reason)
    return bytes(conn.data_to_send())


#: What a connection refused while main is out of file descriptors gets.
_OUT_OF_DESCRIPTORS = _goodbye(
    CloseCode.TOO_MANY_CONNECTIONS, "too many connections: main is out of file descriptors"
)


async def _refuse(stream: anyio.abc.ByteStream, code: CloseCode, reason: str) -> None:
    """Send a lone Goodbye and close: for connections refused before the handshake."""
    logger.warning("refused a connection: %s", reason)
    with anyio.move_on_after(1, shield=True):
        with suppress(*_SEND_ERRORS):
            await stream.send(_goodbye(code, reason))
    with anyio.CancelScope(shield=True):
        await stream.aclose()


_SEND_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


def _heartbeat(
    setting: float | Literal["auto"] | None, tcp: bool, stream: anyio.abc.ByteStream
) -> float | None:
    if setting == "auto":
        if isinstance(stream, FrameStream):
            return stream.heartbeat_auto
        return 5.0 if tcp else None
    return setting


async def _await_hook(hook: Callable[..., Any], awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        logger.exception("lifecycle hook %r raised", hook)


def _channel_set(channels: Iterable[str] | None) -> frozenset[str] | None:
    if channels is None:
        return None
    if isinstance(channels, str):
        raise TypeError("allowed_channels must be a collection of channel names, not a str")
    return frozenset(check_channel(channel) for channel in channels)


def _callable(fn: H) -> H:
    if not callable(fn):
        raise TypeError(f"hook must be callable, not {type(fn).__name__}")
    return fn


def _details(termination: ConnectionTerminated | None, exit_code: int | None) -> DisconnectDetails:
    message = termination.reason if termination is not None else "never connected"
    protocol_codes = (
        CloseCode.PROTOCOL_ERROR,
        CloseCode.AUTHENTICATION_FAILED,
        CloseCode.VERSION_MISMATCH,
        CloseCode.FRAME_TOO_LARGE,
    )
    reason: DisconnectReason
    # A process that died explains whatever its connection saw last (say, a
    # frame cut in half by SIGKILL), so its exit code comes first.
    if exit_code is not None and exit_code < 0:
        reason = "killed"
    elif exit_code is not None and exit_code > 0:
        reason = "crashed"
    elif termination is not None and termination.code in protocol_codes:
        reason = "protocol-error"
    elif exit_code == 0 or (termination is not None and termination.code is not None):
        reason = "clean-exit"
    else:
        reason = "connection-lost"
    return DisconnectDetails(reason, exit_code, message)
