"""A blocking renderer for threads and programs without an event loop.

``ipcbus.sync.IpcRenderer`` is :class:`ipcbus.IpcRenderer` with blocking
methods, in the same order of operations: register listeners and handlers
first, then connect, so nothing main sends once the connection is up (say, in
its ``on_connect`` hook) is lost. The connection runs on an event loop in a
background thread (anyio's blocking portal) that ``connect`` starts and
``close`` stops.

Where your functions run:

* **Listeners** (``on``, ``once``) run on that loop's thread, in the order
  main sent the messages, one at a time, as in the async renderer. They must
  be quick and thread-safe (hand work to your own threads, e.g. through a
  ``queue.Queue``), and must not call this renderer's blocking methods (that
  raises ``RuntimeError``: the loop would wait for itself). They may be plain
  or ``async`` functions.
* **Handlers** (``handle``, ``handle_once``) that are plain functions run in a
  worker thread (``anyio.to_thread``), so they may block and may call this
  renderer's blocking methods (``invoke`` main while answering main's
  ``contents.invoke``). Concurrent invokes run in concurrent threads. A
  cancelled invoke (main's timeout) is answered once the function returns:
  a thread cannot be interrupted. ``async`` handlers run on the loop.

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
import functools
import inspect
import os
import ssl
import threading
from collections.abc import Callable, Coroutine
from contextlib import ExitStack, suppress
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import renderer as _async
from ._errors import ConnectionClosedError
from ._registry import check_channel
from ._wire import DEFAULT_MAX_FRAME_SIZE

__all__ = ("IpcRenderer", "SyncRenderer", "connect")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class _Renderer(_async.IpcRenderer):
    """The async renderer underneath, whose events name the blocking one as ``sender``."""

    def __init__(self, facade: IpcRenderer, **options: Any) -> None:
        super().__init__(**options)
        self._facade = facade

    def make_event(self, channel: str, slot: Any) -> _async.IpcRendererEvent:
        return _async.IpcRendererEvent(channel, self._facade)  # type: ignore[arg-type]

    @property
    def _event_sender(self) -> Any:
        return self._facade


class IpcRenderer:
    """A renderer's side of the bus, with blocking methods (``ipcbus.IpcRenderer``'s twin).

    Register listeners and handlers, then :meth:`connect`. Listeners get
    ``(event, *args)`` with ``event.sender`` this object. See the module
    docstring for the threads your functions run on.

    Args: as :class:`ipcbus.IpcRenderer`.
    """

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        send_tracebacks: bool = True,
        max_in_flight: int = 256,
        heartbeat_interval: float | Literal["auto"] | None = "auto",
        heartbeat_timeout: float | None = None,
        send_timeout: float | None = 30.0,
    ) -> None:
        self._renderer = _Renderer(
            self,
            max_frame_size=max_frame_size,
            send_tracebacks=send_tracebacks,
            max_in_flight=max_in_flight,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            send_timeout=send_timeout,
        )
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._loop_thread: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the fast path (_call)

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
        stack = ExitStack()
        try:
            portal = stack.enter_context(start_blocking_portal())
            self._loop_thread, self._loop = portal.call(_loop_identity)
            self._portal = portal
            cm = self._renderer.connect(
                address, token=token, timeout=timeout, ssl_context=ssl_context
            )
            stack.enter_context(portal.wrap_async_context_manager(cm))
        except BaseException:
            self._portal = self._loop_thread = self._loop = None
            stack.close()
            raise
        self._stack = stack
        return self

    def close(self) -> None:
        """Disconnect and stop the background loop. Idempotent."""
        self._not_on_loop("close")
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                stack.close()
        finally:
            self._portal = self._loop_thread = self._loop = None

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
        return self._renderer.id

    def is_connected(self) -> bool:
        return self._renderer.is_connected()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until main ends the connection; ``False`` if ``timeout`` s passed first."""

        async def wait() -> bool:
            with anyio.move_on_after(timeout):
                await self._renderer.wait_closed()
                return True
            return False

        return bool(self._call("wait_closed", wait))

    # ---- calls to main (blocking) --------------------------------------

    def send(self, channel: str, *args: Any) -> None:
        """As ``IpcRenderer.send``, blocking until the frame is handed to the socket."""
        self._call("send", functools.partial(self._renderer.send, channel, *args))

    def send_sync(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """As ``IpcRenderer.send_sync``: main's listeners' ``event.return_value``."""
        call = functools.partial(self._renderer.send_sync, channel, *args, timeout=timeout)
        return self._call("send_sync", call)

    def invoke(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """As ``IpcRenderer.invoke``: the result of main's ``handle(channel)``."""
        call = functools.partial(self._renderer.invoke, channel, *args, timeout=timeout)
        return self._call("invoke", call)

    # ---- listeners and handlers ----------------------------------------

    @overload
    def on(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def on(self, channel: str, listener: F) -> F: ...
    def on(self, channel: str, listener: F | None = None) -> F | Callable[[F], F]:
        """Listen to ``channel``; ``listener(event, *args)`` runs on the loop's thread."""
        return self._register(self._renderer.on, channel, listener)

    @overload
    def once(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def once(self, channel: str, listener: F) -> F: ...
    def once(self, channel: str, listener: F | None = None) -> F | Callable[[F], F]:
        """As :meth:`on`, removed before its first call."""
        return self._register(self._renderer.once, channel, listener)

    def off(self, channel: str, listener: Callable[..., Any]) -> None:
        """Remove the most recent registration of ``listener`` on ``channel``."""
        self._locally(lambda: self._renderer.off(channel, listener))

    remove_listener = off

    def remove_all_listeners(self, channel: str | None = None) -> None:
        """Remove every listener of ``channel``, or of every channel."""
        self._locally(lambda: self._renderer.remove_all_listeners(channel))

    def listener_count(self, channel: str) -> int:
        return self._renderer.listener_count(channel)

    @overload
    def handle(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def handle(self, channel: str, handler: F) -> F: ...
    def handle(self, channel: str, handler: F | None = None) -> F | Callable[[F], F]:
        """Serve main's ``contents.invoke(channel, ...)``; a plain handler runs in a worker thread.

        Raises:
            HandlerExistsError: ``channel`` already has a handler.
        """
        return self._register(self._renderer.handle, channel, handler, in_worker=True)

    @overload
    def handle_once(self, channel: str) -> Callable[[F], F]: ...
    @overload
    def handle_once(self, channel: str, handler: F) -> F: ...
    def handle_once(self, channel: str, handler: F | None = None) -> F | Callable[[F], F]:
        """As :meth:`handle`, removed before its first call."""
        return self._register(self._renderer.handle_once, channel, handler, in_worker=True)

    def remove_handler(self, channel: str) -> None:
        """Remove the handler of ``channel``; no error if there is none."""
        self._locally(lambda: self._renderer.remove_handler(channel))

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
            target = _in_worker_thread(fn) if in_worker else fn
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
                "listeners run on the renderer's loop thread, which would wait for itself; "
                "use a handler (it runs in a worker thread) or hand off to another thread"
            )

    def _call(self, what: str, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``call()`` on the loop and block until it is done; its result or exception."""
        self._not_on_loop(what)
        portal, loop = self._portal, self._loop
        if portal is None:
            raise ConnectionClosedError(
                f"not connected: call {what}() inside 'with ipc_renderer.connect(...):'"
            )
        if loop is None:
            return portal.call(call)  # the loop is not asyncio's: anyio's way
        return _run_on_asyncio(loop, call, what)


#: The name before 0.2: what ``ipcbus.sync.connect`` returns.
SyncRenderer = IpcRenderer


def _loop_identity() -> tuple[int, asyncio.AbstractEventLoop | None]:
    """The loop thread's id, and its asyncio loop (``None`` under another backend)."""
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    return threading.get_ident(), loop


# ---- the fast path of a blocking call --------------------------------------------
#
# ``BlockingPortal.call`` makes a concurrent Future, hands the loop a callback
# that starts a task in the portal's task group under a cancel scope of its
# own, and waits on the Future's condition. On asyncio this does the least
# that crossing threads needs: one ``call_soon_threadsafe`` (wakes the loop),
# one task (the call may await, and a ``timeout=`` is an anyio cancel scope,
# which needs a task), and a ``threading.Lock`` the task's done-callback
# releases (wakes this thread). The task belongs to the blocked caller: it
# waits for it, and cancels it if the wait is interrupted (Ctrl-C), so an
# invoke stops and main is sent its Cancel. benchmarks/bench.py, scenario S,
# measures it beside multiprocessing.connection; docs/performance.md has the
# figures. Other backends take ``portal.call``.


def _run_on_asyncio(
    loop: asyncio.AbstractEventLoop, call: Callable[[], Coroutine[Any, Any, T]], what: str
) -> T:
    done = threading.Lock()
    done.acquire()
    outcome: list[asyncio.Future[T]] = []
    started: list[asyncio.Task[T]] = []

    def finished(task: asyncio.Future[T]) -> None:
        outcome.append(task)
        done.release()

    def start() -> None:
        try:
            task = loop.create_task(call())
        except BaseException as exc:  # the coroutine could not even be made
            failed: asyncio.Future[T] = loop.create_future()
            failed.set_exception(exc)
            finished(failed)
            return
        started.append(task)
        task.add_done_callback(finished)

    scheduled = False
    try:
        loop.call_soon_threadsafe(start)
        scheduled = True
        while not done.acquire(timeout=1.0):
            if loop.is_closed() and not outcome:  # stopped by close() before ``start`` ran
                raise ConnectionClosedError(f"the renderer closed during {what}()")
    except RuntimeError:
        if scheduled:
            raise
        # The loop has stopped: close() ran in another thread.
        raise ConnectionClosedError(f"not connected: {what}() after the renderer closed") from None
    except BaseException:  # interrupted (KeyboardInterrupt): stop the call, then go
        with suppress(RuntimeError):  # (the loop may have stopped meanwhile)
            loop.call_soon_threadsafe(lambda: [task.cancel() for task in started])
        raise
    task = outcome[0]
    if task.cancelled():  # only the loop's shutdown cancels it: the connection is gone
        raise ConnectionClosedError(f"the renderer closed during {what}()")
    return task.result()


def _in_worker_thread(fn: F) -> F:
    """``fn`` as an async function that runs it in a worker thread; async ones as they are."""
    if (
        not callable(fn)  # the registry says why
        or inspect.iscoroutinefunction(fn)
        or inspect.isasyncgenfunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    ):
        return fn

    @functools.wraps(fn)  # keeps the annotations the arguments are converted by
    async def in_worker(*args: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    return in_worker  # type: ignore[return-value]


def connect(
    address: str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> IpcRenderer:
    """A fresh blocking renderer, connected; arguments as ``ipcbus.connect``."""
    return IpcRenderer().connect(address, token=token, timeout=timeout, ssl_context=ssl_context)
