"""A blocking renderer for threads and programs without an event loop.

``ipcbus.sync.IpcRenderer`` is :class:`ipcbus.IpcRenderer` with blocking
methods, in the same order of operations: register listeners and handlers
first, then connect, so nothing main sends once the connection is up (say, in
its ``on_connect`` hook) is lost.

A blocking call does its own I/O, in the calling thread: ``invoke`` writes
the request and reads the socket until its reply arrives, with no event loop
and no other thread on the way (``ipcbus._blocking``; docs/architecture.md).
It polls the socket for a quick reply before it sleeps (``spin``, see
:class:`IpcRenderer`). Between calls a reader thread reads what main sends. Messages and main's
``contents.invoke`` calls are handed to an event loop in a background thread
that ``connect`` starts and ``close`` stops, which runs your functions:

* **Listeners** (``on``, ``once``) run on that loop's thread, in the order
  main sent the messages, one at a time, as in the async renderer. They must
  be quick and thread-safe (hand work to your own threads, e.g. through a
  ``queue.Queue``), and must not call this renderer's blocking methods (that
  raises ``RuntimeError``). They may be plain or ``async`` functions.
* **Handlers** (``handle``, ``handle_once``) that are plain functions run in a
  worker thread (``anyio.to_thread``), so they may block and may call this
  renderer's blocking methods (``invoke`` main while answering main's
  ``contents.invoke``). Concurrent invokes run in concurrent threads. A
  cancelled invoke (main's timeout) is answered once the function returns:
  a thread cannot be interrupted. ``async`` handlers run on the loop.

What main sends waits for the loop in a bounded queue: with
``max_in_flight`` messages and calls not yet taken up (listeners behind,
handlers waiting for their turn), this renderer stops reading, so main's
sends wait rather than this process's memory growing (docs/reliability.md).

Any number of threads may call one renderer at once; each gets its own
reply. Message ports and streams are the async renderer's: ports main sends
here are closed (their peers see "close"), and main's ``contents.stream``
gets ``NoHandlerError``.

Example::

    import ipcbus.sync

    ipc = ipcbus.sync.IpcRenderer()
    ipc.on("greeting", lambda event, text: print(text))
    ipc.handle("title", lambda event: "my window")  # main's contents.invoke("title")

    with ipc.connect("unix:/tmp/ipcbus-x/main.sock", token=token):
        print(ipc.invoke("add", 1, 2))

``ipcbus.sync.connect(address, token=...)`` is the shortcut: a fresh
``IpcRenderer``, connected (register on it afterwards; what main sends before
that is dropped, as with any channel nobody listens to).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from collections.abc import Callable
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import anyio
import anyio.abc
import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._blocking import BlockingLink
from ._buffers import body_buffer
from ._connecting import find_main, raise_if_refused
from ._errors import ConnectionClosedError, IpcTimeoutError
from ._events import Event
from ._liveness import heartbeat_for
from ._lograte import flush_per_process
from ._protocol import OPEN, Connection, Role
from ._registry import Registry, check_channel
from ._rendereroptions import DEFAULT_MAX_IN_FLIGHT, DEFAULT_SEND_TIMEOUT, RendererOptions
from ._spin import MAX_SPIN
from ._syncloop import LoopSide, in_worker_thread, loop_identity
from ._transport import connect_blocking, tls_failed
from ._wire import DEFAULT_MAX_FRAME_SIZE, INVOKE, RequestKind

__all__ = ("IpcRenderer", "SyncRenderer", "connect")

#: Seconds a blocking call polls for its reply before it sleeps (``_spin``):
#: about twice a quick round trip to a main on asyncio, on a busy 2-core VM.
DEFAULT_SPIN = 0.0002

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class IpcRenderer(LoopSide, RendererOptions):
    """A renderer's side of the bus, with blocking methods (``ipcbus.IpcRenderer``'s twin).

    Register listeners and handlers, then :meth:`connect`. Listeners get
    ``(event, *args)`` with ``event.sender`` this object. See the module
    docstring for the threads your functions run on.

    Args: as :class:`ipcbus.IpcRenderer` (``max_in_flight``: handlers run at
    once; more wait their turn), and ``spin``: seconds a call polls the
    socket for its reply before its thread sleeps (0: never; at most 0.005).
    Polling saves the wake-up, half a quick round trip on some machines, at
    the cost of that much CPU per call that turns out slow; it stops by
    itself while replies take longer, and is off with one CPU or while an
    ``IpcMain`` runs in this process.
    """

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        send_tracebacks: bool = True,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        heartbeat_interval: float | Literal["auto"] | None = "auto",
        heartbeat_timeout: float | None = None,
        send_timeout: float | None = DEFAULT_SEND_TIMEOUT,
        spin: float = DEFAULT_SPIN,
    ) -> None:
        self._keep_options(
            max_frame_size=max_frame_size,
            send_tracebacks=send_tracebacks,
            max_in_flight=max_in_flight,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            send_timeout=send_timeout,
        )
        if isinstance(spin, bool) or not isinstance(spin, (int, float)):
            raise TypeError(f"spin must be a number of seconds, not {type(spin).__name__}")
        if not 0 <= spin <= MAX_SPIN:
            raise ValueError(f"spin must be from 0 to {MAX_SPIN} (seconds), not {spin!r}")
        self.spin = spin
        self._registry = Registry()
        self._id = 0
        self._stack: ExitStack | None = None
        self._link: BlockingLink | None = None
        self._portal: BlockingPortal | None = None
        self._loop_thread: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[list[Event]] | None = None  # the loop's, fed by readers
        self._scopes: dict[int, anyio.CancelScope] = {}  # handlers running, by request id
        self._room = threading.Condition()  # the bound on what the loop has not taken up

    # ---- connecting ----------------------------------------------------

    def connect(
        self,
        address: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> IpcRenderer:
        """Connect to main and run the handshake; returns this renderer.

        Use it as ``with ipc.connect(...):`` (closes on exit) or call
        :meth:`close` yourself. Arguments as :meth:`ipcbus.IpcRenderer.connect`
        (no address: the main that spawned this process, else
        ``$IPCBUS_ADDRESS``). Listeners and handlers registered before this
        call see everything main sends, including from its ``on_connect``.

        Raises:
            RuntimeError: already connected.
            AuthenticationError, ProtocolError, ConnectionClosedError,
            IpcTimeoutError: as the async ``connect``.
        """
        if self._stack is not None:
            raise RuntimeError("this ipcbus.sync.IpcRenderer is already connected")
        where, token = find_main(address, token)
        stack = ExitStack()
        try:
            sock, hostname = self._open(where, ssl_context, timeout)
            try:
                portal = stack.enter_context(start_blocking_portal("asyncio"))
                stack.callback(portal.call, portal.stop, True)  # cancels running handlers
                self._loop_thread, self._loop = portal.call(loop_identity)
                self._portal = portal
                self._inbox = portal.start_task(self._dispatch_events)[1]
                self._start_posting()
                conn = Connection(
                    Role.RENDERER,
                    token=token,
                    process_id=os.getpid(),
                    max_frame_size=self.max_frame_size,
                    new_buffer=body_buffer,
                )
                tcp = isinstance(where, str) and where.startswith("tcp:")
                link = BlockingLink(
                    sock,
                    conn,
                    self._post,
                    send_timeout=self.send_timeout,
                    heartbeat_interval=heartbeat_for(self.heartbeat_interval, tcp),
                    heartbeat_timeout=self.heartbeat_timeout,
                    send_tracebacks=self.send_tracebacks,
                    ssl_context=ssl_context if hostname is not None else None,
                    server_hostname=hostname,
                    spin=self.spin,
                )
            except BaseException:
                sock.close()
                raise
            stack.callback(link.close)  # before the loop stops (the stack unwinds backwards)
            self._link = link
            try:
                link.start(timeout)
            except ssl.SSLError as exc:
                raise tls_failed(str(where), exc) from exc
            if not conn.renderer_id:
                raise_if_refused(link.termination)
            self._id = conn.renderer_id
        except BaseException:
            self._forget()
            stack.close()
            raise
        self._stack = stack
        return self

    @staticmethod
    def _open(
        where: socket.socket | str | os.PathLike[str],
        ssl_context: ssl.SSLContext | None,
        timeout: float,
    ) -> tuple[socket.socket, str | None]:
        if isinstance(where, socket.socket):
            return where, None
        try:
            return connect_blocking(where, ssl_context, timeout)
        except TimeoutError:
            raise IpcTimeoutError(
                f"could not connect to main at {where} within {timeout} s"
            ) from None

    def close(self) -> None:
        """Disconnect and stop the background threads. Idempotent."""
        self._not_on_loop("close")
        self._stop_posting()  # a reading thread waiting for room must not hold up the close
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                stack.close()
        finally:
            self._forget()
            flush_per_process()  # what a flood held back, counted before we are gone

    def _forget(self) -> None:
        self._stop_posting()
        self._portal = self._loop_thread = self._loop = self._inbox = None
        self._link = None

    def __enter__(self) -> IpcRenderer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def id(self) -> int:
        """The id main gave this renderer (0 before the first connection)."""
        return self._id

    def is_connected(self) -> bool:
        link = self._link
        return link is not None and link.conn.state is OPEN

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until main ends the connection; ``False`` if ``timeout`` s passed first."""
        return self._open_link("wait_closed").closed.wait(timeout)

    # ---- calls to main (blocking) --------------------------------------

    def send(self, channel: str, *args: Any) -> None:
        """As ``IpcRenderer.send``, blocking until the frame is handed to the socket."""
        check_channel(channel)
        self._open_link("send").send(channel, args)

    def send_sync(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """As ``IpcRenderer.send_sync``: main's listeners' ``event.return_value``."""
        check_channel(channel)
        return self._open_link("send_sync").call(RequestKind.SYNC, channel, args, timeout)

    def invoke(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """As ``IpcRenderer.invoke``: the result of main's ``handle(channel)``."""
        if type(channel) is not str or not channel:  # the common case without a call
            check_channel(channel)
        if self._loop_thread is not None and threading.get_ident() == self._loop_thread:
            self._not_on_loop("invoke")
        link = self._link
        if link is None:
            link = self._open_link("invoke")  # raises
        return link.call(INVOKE, channel, args, timeout)

    # ---- listeners and handlers ----------------------------------------

    @overload
    def on(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def on(self, channel: str, listener: F) -> F: ...
    def on(self, channel: str, listener: F | None = None) -> F | Callable[[F], F]:
        """Listen to ``channel``; ``listener(event, *args)`` runs on the loop's thread."""
        return self._register(self._registry.on, channel, listener)

    @overload
    def once(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def once(self, channel: str, listener: F) -> F: ...
    def once(self, channel: str, listener: F | None = None) -> F | Callable[[F], F]:
        """As :meth:`on`, removed before its first call."""
        return self._register(self._registry.once, channel, listener)

    def off(self, channel: str, listener: Callable[..., Any]) -> None:
        """Remove the most recent registration of ``listener`` on ``channel``."""
        self._locally(lambda: self._registry.off(channel, listener))

    remove_listener = off

    def remove_all_listeners(self, channel: str | None = None) -> None:
        """Remove every listener of ``channel``, or of every channel."""
        self._locally(lambda: self._registry.remove_all_listeners(channel))

    def listener_count(self, channel: str) -> int:
        return self._registry.listener_count(channel)

    @overload
    def handle(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def handle(self, channel: str, handler: F) -> F: ...
    def handle(self, channel: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Serve main's ``contents.invoke(channel, ...)``; a plain handler runs in a worker thread.

        Raises:
            HandlerExistsError: ``channel`` already has a handler.
        """
        return self._register(self._registry.handle, channel, handler, in_worker=True)

    @overload
    def handle_once(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def handle_once(self, channel: str, handler: F) -> F: ...
    def handle_once(self, channel: str, handler: F | None = None) -> F | Callable[[F], F]:
        """As :meth:`handle`, removed before its first call."""
        return self._register(self._registry.handle_once, channel, handler, in_worker=True)

    def remove_handler(self, channel: str) -> None:
        """Remove the handler of ``channel``; no error if there is none."""
        self._locally(lambda: self._registry.remove_handler(channel))

    # ---- internals -----------------------------------------------------

    def _register(
        self,
        method: Callable[[str, Any], Any],
        channel: str,
        fn: F | None,
        *,
        in_worker: bool = False,
    ) -> F | Callable[[F], F]:
        check_channel(channel)

        def register(fn: F) -> F:
            target = in_worker_thread(fn) if in_worker else fn
            self._locally(lambda: method(channel, target))
            return fn

        return register if fn is None else register(fn)

    def _locally(self, change: Callable[[], T]) -> T:
        """Change the registry on the loop's thread once it runs, which reads it."""
        portal = self._portal
        if portal is None or threading.get_ident() == self._loop_thread:
            return change()
        return portal.call(change)

    def _not_on_loop(self, what: str) -> None:
        if self._loop_thread is not None and threading.get_ident() == self._loop_thread:
            raise RuntimeError(
                f"ipcbus.sync.IpcRenderer.{what}() cannot be called from a listener: "
                "listeners run on the renderer's loop thread, which must not block; "
                "use a handler (it runs in a worker thread) or hand off to another thread"
            )

    def _open_link(self, what: str) -> BlockingLink:
        """The link, for a blocking method (not from a listener: the loop must not block)."""
        self._not_on_loop(what)
        link = self._link
        if link is None:
            raise ConnectionClosedError(
                f"not connected: call {what}() inside 'with ipc_renderer.connect(...):'"
            )
        return link


#: The name before 0.2: what ``ipcbus.sync.connect`` returns.
SyncRenderer = IpcRenderer


def connect(
    address: str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> IpcRenderer:
    """A fresh blocking renderer, connected; arguments as ``ipcbus.connect``."""
    return IpcRenderer().connect(address, token=token, timeout=timeout, ssl_context=ssl_context)
