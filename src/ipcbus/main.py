"""The main process's side of the bus: ``IpcMain``, and ``Listener``.

``IpcMain`` is the part an app holds: its lifecycle, the table of
connected renderers, ``broadcast``, guards and hooks. Its other rooms:
``_arrivals`` (its base class ``Arrivals``: the ways renderers arrive,
``listen``, ``serve_web``, ``join``, ``spawn`` and ``connect_local``),
``_mainoptions`` (its base class ``MainOptions``: the settings, checked),
``_webcontents`` (one renderer, ``WebContents``),
``_mainevents`` (what listeners, handlers and hooks receive),
``_serving`` (one renderer's connection from its first byte to its end),
``_listening`` (``Listener``: renderers that connect to a socket) and
``_children`` (renderers started as child processes).
Their public classes are re-exported here and keep ``ipcbus.main`` as
their module.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import Callable, Iterable
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from ._arrivals import Arrivals
from ._broadcast import Fanout
from ._calling import own_failure
from ._children import stop_lingering
from ._endpoint import logger
from ._guards import Guards
from ._handshakes import HandshakeDeadlines
from ._listening import Listener
from ._liveness import Sweeper
from ._lograte import WarningRate, restart_per_process
from ._loop import loop_hold
from ._mainevents import DisconnectDetails, IpcMainEvent, IpcMainInvokeEvent
from ._mainoptions import MainOptions
from ._portparts import current_host
from ._portroute import MainPortRouter
from ._protocol import prepare_message
from ._registry import Callback, Registry, check_channel
from ._serving import Link, Waiting
from ._spin import main_entered, main_left
from ._values import ENCODE_ERRORS, encode_error
from ._webcontents import WebContents
from ._wire import DEFAULT_MAX_FRAME_SIZE, CloseCode

if TYPE_CHECKING:
    from .web import WebServer

__all__ = (
    "DisconnectDetails",
    "IpcMain",
    "IpcMainEvent",
    "IpcMainInvokeEvent",
    "Listener",
    "WebContents",
)

# Defined in their own rooms, public here: tracebacks, reprs, pickles and
# help() name them ipcbus.main.X, as before the split.
for _public in (DisconnectDetails, IpcMainEvent, IpcMainInvokeEvent, Listener, WebContents):
    _public.__module__ = __name__
del _public

H = TypeVar("H", bound=Callable[..., Any])


class _Joined(Protocol):
    """An app this main serves as a replica, through a broker (``IpcMain.join``)."""

    async def stop_accepting(self) -> None: ...
    def check_broadcast(self, frame: bytes) -> None: ...
    async def broadcast(self, frame: bytes) -> None: ...


class IpcMain(Arrivals, MainOptions, Registry):
    """The main process's side of the bus (Electron's ``ipcMain``).

    Args:
        max_frame_size: largest frame accepted from a renderer, in bytes.
        handshake_timeout: seconds a new connection has to present its token.
        shutdown_grace: seconds running handlers and async listeners get to
            finish when the ``async with`` block ends, and spawned children to
            exit, before they are cancelled or terminated.
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
        max_open_ports: per renderer, ends of message channels it made that
            may be open in main at once (each costs main a few kilobytes
            for a few bytes sent); one more ends its connection.
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
        max_open_ports: int = 4096,
    ) -> None:
        super().__init__()
        self._keep_options(
            max_frame_size=max_frame_size,
            handshake_timeout=handshake_timeout,
            shutdown_grace=shutdown_grace,
            send_tracebacks=send_tracebacks,
            max_in_flight=max_in_flight,
            max_connections=max_connections,
            max_pending_handshakes=max_pending_handshakes,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            send_timeout=send_timeout,
            allowed_channels=allowed_channels,
            max_open_ports=max_open_ports,
        )
        self._guards = Guards()
        self._ports = MainPortRouter(lambda: self._tg, lambda: self.max_open_ports)
        self._host_token: Any = None
        self._contents: dict[int, WebContents] = {}
        self._links: set[Link] = set()
        # Connections from listeners and the web server before their handshake.
        self._waiting = Waiting(lambda: self.max_pending_handshakes)
        # Peers can end connections before their handshake in any number.
        self._handshakes = HandshakeDeadlines(self)  # of connections yet to show the token
        self._handshake_warnings = WarningRate(
            logging.getLogger("ipcbus"), "connections ended before their handshake"
        )
        self._listeners_open: set[Listener | WebServer] = set()
        self._joined: list[_Joined] = []  # apps served as a replica (join)
        self._fanout = Fanout()  # broadcast's writes
        self._ids = itertools.count(1)
        self._connect_hooks: list[Callable[..., Any]] = []
        self._disconnect_hooks: list[Callable[..., Any]] = []
        self._hooks_running = 0  # async hooks not yet finished (shutdown waits for them)
        self._hooks_done: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._sweeper: Sweeper | None = None  # one liveness watchdog for all connections
        # Spawned children whose connection ended while they kept running.
        self._lingering: set[anyio.abc.Process] = set()
        self._closing = False

    # ---- lifecycle -----------------------------------------------------

    async def __aenter__(self) -> IpcMain:
        if self._tg is not None:
            raise RuntimeError("this IpcMain is already running")
        restart_per_process()
        self._closing = False
        self._hooks_running = 0
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._sweeper = Sweeper(tg)
        self._host_token = current_host.set(self._ports.host)  # ports made here deliver here
        self._ports.bind(loop_hold())  # collected ports close on this loop
        main_entered()  # blocking calls in this process stop polling (_spin)
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
            main_left()
            self._handshake_warnings.flush()
            restart_per_process()
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
        await stop_lingering(self)  # children no longer connected: none outlives main
        await self._finish_hooks()

    async def _finish_hooks(self) -> None:
        """Give async hooks still running (``on_disconnect`` of the renderers just
        closed) ``shutdown_grace`` to finish before main's task group cancels them."""
        if not self._hooks_running:
            return
        with anyio.move_on_after(self.shutdown_grace):
            while self._hooks_running:
                self._hooks_done = anyio.Event()
                await self._hooks_done.wait()
        if self._hooks_running:
            logger.warning(
                "%d lifecycle hook(s) did not finish within shutdown_grace (%s s) after "
                "the renderers were closed: cancelled",
                self._hooks_running,
                self.shutdown_grace,
            )

    async def _close_link(self, link: Link) -> None:
        endpoint = link.contents._endpoint
        if endpoint is not None:
            endpoint.cancel_handlers()
            # Only handlers: async listeners past the grace are cancelled with
            # main's task group, once every connection is closed.
            await endpoint.wait_idle(listeners=False)
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

    def _add_renderer(self, contents: WebContents) -> None:
        """A renderer's handshake is over: it is connected."""
        self._contents[contents.id] = contents
        self._fanout.outboxes = None

    def _remove_renderer(self, contents: WebContents) -> bool:
        """A renderer is gone; whether it was connected."""
        self._fanout.outboxes = None
        return self._contents.pop(contents.id, None) is not None

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
        (backpressure), until their writer has handed it to the socket;
        otherwise it does not yield. Broadcasts made one after another
        without yielding reach each renderer in one write, at the end of
        the loop turn (the first of them at once).

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
        fanout = self._fanout
        outboxes = fanout.outboxes
        if outboxes is None:  # a renderer came or went since the last broadcast
            outboxes = fanout.outboxes = [
                c._endpoint.outbox for c in self._contents.values() if c._endpoint is not None
            ]
        congested = fanout.queue(outboxes, frame)
        for outbox in congested:
            await outbox.flush_quietly()  # a failed one belongs to a renderer now gone

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
            except BaseException as exc:
                if not own_failure(exc):
                    raise
                logger.exception("lifecycle hook %r raised", hook)
                continue
            if inspect.isawaitable(result) and self._tg is not None:
                self._hooks_running += 1
                self._tg.start_soon(self._await_hook, hook, result)

    async def _await_hook(self, hook: Callable[..., Any], awaitable: Any) -> None:
        try:
            await awaitable
        except BaseException as exc:
            if not own_failure(exc):
                raise
            logger.exception("lifecycle hook %r raised", hook)
        finally:
            self._hooks_running -= 1
            if not self._hooks_running and self._hooks_done is not None:
                self._hooks_done.set()


def _callable(fn: H) -> H:
    if not callable(fn):
        raise TypeError(f"hook must be callable, not {type(fn).__name__}")
    return fn
