"""The renderer side: ``IpcRenderer`` (Electron's ``ipcRenderer``) and ``connect()``.

What it shares with the blocking renderer (``ipcbus.sync``) lives beside
it: its options in ``_rendereroptions``, finding and reaching main in
``_connecting``; its message ports in ``_rendererports``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, ClassVar, Literal

import anyio
import anyio.abc
import msgspec

from ._buffers import body_buffer
from ._calls import ReplySlot
from ._connecting import Connecting, open_main, raise_if_refused
from ._endpoint import Endpoint
from ._errors import ConnectionClosedError, IpcTimeoutError
from ._events import ConnectionTerminated, HandshakeCompleted, PortClosed, PortMessageReceived
from ._framestream import frame_limit
from ._liveness import heartbeat_for
from ._lograte import flush_per_process
from ._outbox import Outbox
from ._portparts import current_host
from ._protocol import OPEN, Connection, Role, State
from ._registry import Callback, Registry, check_channel
from ._rendereroptions import DEFAULT_MAX_IN_FLIGHT, DEFAULT_SEND_TIMEOUT, RendererOptions
from ._rendererports import RendererPortRouter
from ._streams import DEFAULT_WINDOW, IpcStream
from ._wire import DEFAULT_MAX_FRAME_SIZE, INVOKE, CloseCode, PortRef, RequestKind
from .ports import MessagePortMain, check_transfer

__all__ = ("IpcRenderer", "IpcRendererEvent", "connect")


class IpcRendererEvent(msgspec.Struct, eq=False):
    """What an ``ipc_renderer.on`` listener or ``handle`` handler receives.

    Attributes:
        channel: the channel the message came on.
        sender: the ``IpcRenderer`` that received it (as in Electron).
        sender_id: who sent it: always 0, main.
        ports: message ports sent along, else empty.
    """

    # A msgspec Struct for the speed of making one per message, not for encoding.
    channel: str
    sender: IpcRenderer
    ports: list[Any] = []
    sender_id: int = 0

    def __repr__(self) -> str:
        return f"<IpcRendererEvent channel={self.channel!r}>"


class IpcRenderer(Registry, RendererOptions):
    """A renderer's side of the bus.

    Register listeners and handlers first, then connect: nothing main sends
    once the connection is up is lost.

    Args:
        max_frame_size: largest frame accepted from main, in bytes.
        send_tracebacks: include handler tracebacks in errors sent to main.
        max_in_flight: handlers and async listeners run at once before this
            renderer stops reading from main.
        heartbeat_interval: seconds between pings to main; ``"auto"``: 5 s
            over TCP, none over unix sockets; ``None``: none.
        heartbeat_timeout: main silent this long ends the connection
            (default: three intervals).
        send_timeout: a write main does not read for this long ends the
            connection; ``None``: wait.
    """

    #: The endpoint's owner logs its connection's end itself (``Owner.warnings``).
    warnings: ClassVar[None] = None

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        send_tracebacks: bool = True,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        heartbeat_interval: float | Literal["auto"] | None = "auto",
        heartbeat_timeout: float | None = None,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        super().__init__()
        self._keep_options(
            max_frame_size=max_frame_size,
            send_tracebacks=send_tracebacks,
            max_in_flight=max_in_flight,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            send_timeout=send_timeout,
        )
        self._endpoint: Endpoint | None = None
        self._outbox: Outbox | None = None  # the endpoint's, for send()
        self._handshake: anyio.Event | None = None
        self._ports = RendererPortRouter()
        self.id = 0

    # ---- connecting ----------------------------------------------------

    def connect(
        self,
        address: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        app: str | None = None,
        **nats_options: Any,
    ) -> AbstractAsyncContextManager[IpcRenderer]:
        """Connect to main, run the handshake, and close on exit: ``async with`` it.

        With no address: the socket inherited from ``IpcMain.spawn``, else
        ``$IPCBUS_ADDRESS`` and ``$IPCBUS_TOKEN``. With ``app``: ``address``
        is a NATS server (``"nats://host:4222"``) and this renderer joins one
        replica of ``app`` (``IpcMain.join``); ``nats_options`` go to
        ``nats.connect`` (credentials, ``tls``); see docs/scale-out.md.

        Raises:
            AuthenticationError: main refused the token.
            ProtocolError: main speaks another protocol version, or broke it.
            ConnectionClosedError: there is nothing to connect to, or main
                closed the connection during the handshake.
            IpcTimeoutError: no handshake within ``timeout`` seconds.
            TypeError: used with ``await`` or a plain ``with``.
        """
        return Connecting(
            lambda: self._connect(address, token, timeout, ssl_context, app, nats_options),
            "ipc_renderer.connect(...)",
            "async with ipc_renderer.connect(...):",
        )

    @asynccontextmanager
    async def _connect(
        self,
        address: str | os.PathLike[str] | None,
        token: str | None,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
        app: str | None = None,
        nats_options: dict[str, Any] | None = None,
    ) -> AsyncIterator[IpcRenderer]:
        if app is not None:
            from ._nats import open_renderer_stream

            if self.heartbeat_interval is None:
                raise ValueError(
                    "a renderer joined through NATS needs heartbeats: NATS does not report "
                    "a replica that died (heartbeat_interval must not be None)"
                )
            frames = await open_renderer_stream(
                address, app, timeout, ssl_context=ssl_context, nats_options=nats_options or {}
            )
            async with self._connect_stream(frames, token or "", timeout):
                yield self
            return
        if nats_options:
            raise TypeError(
                f"unexpected keyword arguments {sorted(nats_options)}: NATS options need app=..."
            )
        # The stream's callbacks (``Endpoint.attach``) run in a copy of this
        # context, taken as it opens: ports made in them deliver here too.
        host_token = current_host.set(self._ports.host)
        try:
            with anyio.fail_after(timeout):
                stream, token, tcp = await open_main(address, token, ssl_context)
        except TimeoutError:
            raise IpcTimeoutError(
                f"could not connect to main at {address or 'the spawning process'} "
                f"within {timeout} s"
            ) from None
        finally:
            current_host.reset(host_token)
        async with self._connect_stream(stream, token, timeout, tcp=tcp):
            yield self

    @asynccontextmanager
    async def _connect_stream(
        self, stream: anyio.abc.ByteStream, token: str, timeout: float = 10.0, *, tcp: bool = False
    ) -> AsyncIterator[IpcRenderer]:
        if self._endpoint is not None and self._endpoint.conn.state is not State.CLOSED:
            await stream.aclose()
            raise RuntimeError("this IpcRenderer is already connected")
        conn = Connection(
            Role.RENDERER,
            token=token,
            process_id=os.getpid(),
            max_frame_size=frame_limit(self.max_frame_size, stream),
            new_buffer=body_buffer,
        )
        # The task group is entered by hand and never sees the body's
        # exception: a caller's `except ConnectionClosedError` must work, not
        # receive an ExceptionGroup.
        tg = anyio.create_task_group()
        await tg.__aenter__()
        endpoint = Endpoint(
            conn,
            stream,
            tg,
            self,
            name="main",
            send_tracebacks=self.send_tracebacks,
            max_in_flight=self.max_in_flight,
            send_timeout=self.send_timeout,
            heartbeat_interval=heartbeat_for(self.heartbeat_interval, tcp, stream),
            heartbeat_timeout=self.heartbeat_timeout,
        )
        self._endpoint = endpoint
        self._outbox = endpoint.outbox
        self._handshake = anyio.Event()
        self._ports.attach(endpoint)
        host_token = current_host.set(self._ports.host)  # ports made here deliver here
        # reads handed over by the stream (fast path)
        if not endpoint.attach(_nothing, _nothing_now):
            tg.start_soon(endpoint.run)
        try:
            with anyio.move_on_after(timeout) as scope:
                await self._handshake.wait()
            if scope.cancelled_caught:
                raise IpcTimeoutError(
                    f"main accepted the connection but did not complete the handshake "
                    f"within {timeout} s"
                )
            if not conn.renderer_id:
                # No Welcome: refused. A Welcome read together with a Goodbye is
                # a connection main accepted and then closed: enter, closed.
                raise_if_refused(endpoint.termination)
            yield self
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await endpoint.close_here(CloseCode.NORMAL, "the renderer disconnected")
            finally:
                # Also if the end failed (a bug): the task group entered by hand
                # must be left, or this task's cancel scopes are out of order.
                tg.cancel_scope.cancel()
                await tg.__aexit__(None, None, None)
                with suppress(ValueError):  # exited in another context than entered
                    current_host.reset(host_token)
                flush_per_process()  # what a flood held back, counted before we are gone

    async def wait_closed(self) -> None:
        """Return once the connection to main has ended."""
        if self._endpoint is not None:
            await self._endpoint.closed.wait()

    def is_connected(self) -> bool:
        return self._endpoint is not None and self._endpoint.conn.state is OPEN

    def _open_endpoint(self) -> Endpoint:
        """The connection; each of its calls checks that it is still open."""
        endpoint = self._endpoint
        if endpoint is None:
            raise ConnectionClosedError(
                "not connected: call these inside 'async with ipc_renderer.connect():'"
            )
        return endpoint

    # ---- calls to main -------------------------------------------------

    async def send(self, channel: str, *args: Any) -> None:
        """Send to main's ``ipc_main.on(channel)`` listeners; fire and forget."""
        if type(channel) is not str or not channel:  # the common case without a call
            check_channel(channel)
        outbox = self._outbox
        if outbox is None:
            outbox = self._open_endpoint().outbox  # raises
        if outbox.queue_message(channel, args):
            await outbox.flush()

    async def send_sync(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """Send to main's listeners and return the ``event.return_value`` they set."""
        check_channel(channel)
        return await self._open_endpoint().calls.request(RequestKind.SYNC, channel, args, timeout)

    async def invoke(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """Call main's ``ipc_main.handle(channel)`` handler and return its result."""
        if type(channel) is not str or not channel:  # the common case without a call
            check_channel(channel)
        endpoint = self._endpoint
        if endpoint is None:
            endpoint = self._open_endpoint()  # raises
        return await endpoint.calls.request(INVOKE, channel, args, timeout)

    async def post_message(
        self, channel: str, message: Any, transfer: Iterable[MessagePortMain] = ()
    ) -> None:
        """Send ``message`` with the ports in ``transfer`` to main's ``on(channel)``.

        Main's listeners get ``(event, message)`` with the ports in
        ``event.ports``; the ports here are neutered. If main has no listener
        on ``channel``, it closes the ports (their peers see "close").

        Raises:
            TypeError: a bad ``transfer`` (the message names the index).
            SerializationError: ``message`` cannot be encoded; nothing is sent.
            FrameTooLargeError: the message could be over the peer's
                ``max_frame_size``; nothing is sent and the ports are untouched.
            ConnectionClosedError: not connected.
        """
        check_channel(channel)
        ports = check_transfer(transfer, None, self._ports)
        await self._open_endpoint().outbox.post_message(
            channel, message, len(ports), lambda: self._ports.send_out(ports)
        )

    def stream(self, channel: str, *args: Any, window: int = DEFAULT_WINDOW) -> IpcStream:
        """Iterate what main's async-generator ``handle(channel)`` yields.

        ``window`` items at most are buffered or in flight: a slow loop here
        pauses the generator in main. See :class:`ipcbus.IpcStream`.

        Raises:
            ConnectionClosedError: not connected.
        """
        check_channel(channel)
        endpoint = self._open_endpoint()
        endpoint.require_open()
        return IpcStream(endpoint, channel, args, window)

    # ---- Owner: dispatch of what main sends ---------------------------

    def find_listeners(self, channel: str) -> tuple[Callback, ...]:
        return self.take_listeners(channel)

    def find_handler(self, channel: str) -> Callback | None:
        return self.take_handler(channel)

    def make_event(self, channel: str, slot: ReplySlot | None) -> IpcRendererEvent:
        return IpcRendererEvent(channel, self)

    # Events made per message or call by the endpoint: EventType(channel, _event_sender).
    _message_event = _invoke_event = IpcRendererEvent

    @property
    def _event_sender(self) -> IpcRenderer:
        return self

    def handshake_completed(self, event: HandshakeCompleted) -> None:
        self.id = event.renderer_id
        if self._handshake is not None:
            self._handshake.set()

    def terminated(self, event: ConnectionTerminated) -> None:
        if self._handshake is not None:
            self._handshake.set()
        self._ports.connection_lost()

    def receive_ports(self, refs: Sequence[PortRef]) -> list[Any]:
        return self._ports.land(refs)

    def port_event(self, event: PortMessageReceived | PortClosed) -> None:
        if isinstance(event, PortMessageReceived):
            self._ports.port_message(event)
        else:
            self._ports.port_closed(event)


async def _nothing() -> None:
    """What a renderer does once its connection has ended: no more (see ``terminated``)."""


def _nothing_now() -> bool:
    """``_nothing``, done at once (``Endpoint.attach``'s ``on_end_now``)."""
    return True


def connect(
    address: str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    app: str | None = None,
    **nats_options: Any,
) -> AbstractAsyncContextManager[IpcRenderer]:
    """Shortcut: a fresh ``IpcRenderer``, connected; see :meth:`IpcRenderer.connect`.

    Use it as ``async with ipcbus.connect(...) as ipc_renderer:``.
    """
    renderer = IpcRenderer()
    return Connecting(
        lambda: renderer._connect(address, token, timeout, ssl_context, app, nats_options),
        "ipcbus.connect(...)",
        "async with ipcbus.connect(...) as ipc_renderer:",
    )
