"""A blocking renderer for threads and programs without an event loop.

``ipcbus.sync.connect(...)`` runs an :class:`~ipcbus.IpcRenderer` on an event
loop in a background thread (anyio's blocking portal) and gives you blocking
``send``, ``send_sync`` and ``invoke``. Listeners registered with ``on`` run on
that background thread, so they must be quick and thread-safe; they may be
plain or ``async`` functions.

Example::

    from ipcbus.sync import connect

    with connect("unix:/tmp/ipcbus-x/main.sock", token=token) as ipc:
        print(ipc.invoke("add", 1, 2))
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import start_blocking_portal

from .renderer import IpcRenderer

__all__ = ("SyncRenderer", "connect")

F = TypeVar("F", bound=Callable[..., Any])


class SyncRenderer:
    """A connected renderer with blocking methods; close it (or use ``with``)."""

    def __init__(self, renderer: IpcRenderer, stack: ExitStack) -> None:
        self._renderer = renderer
        self._stack = stack
        self._portal = stack.enter_context(start_blocking_portal())

    def _open(self, cm: AbstractContextManager[Any]) -> None:
        self._stack.enter_context(cm)

    @property
    def id(self) -> int:
        """The id main gave this renderer."""
        return self._renderer.id

    def send(self, channel: str, *args: Any) -> None:
        """As ``IpcRenderer.send``, blocking until the frame is handed to the socket."""
        self._portal.call(partial(self._renderer.send, channel, *args))

    def send_sync(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """As ``IpcRenderer.send_sync``, blocking."""
        return self._portal.call(partial(self._renderer.send_sync, channel, *args, timeout=timeout))

    def invoke(self, channel: str, *args: Any, timeout: float | None = None) -> Any:
        """As ``IpcRenderer.invoke``, blocking."""
        return self._portal.call(partial(self._renderer.invoke, channel, *args, timeout=timeout))

    def on(self, channel: str, listener: F) -> F:
        """Listen to messages from main; ``listener`` runs on the loop's thread."""
        return self._portal.call(lambda: self._renderer.on(channel, listener))

    def off(self, channel: str, listener: Callable[..., Any]) -> None:
        self._portal.call(lambda: self._renderer.off(channel, listener))

    def close(self) -> None:
        """Disconnect and stop the background loop. Idempotent."""
        self._stack.close()

    def __enter__(self) -> SyncRenderer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    address: str | os.PathLike[str] | None = None,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> SyncRenderer:
    """Connect a blocking renderer; arguments as ``ipcbus.connect``."""
    stack = ExitStack()
    renderer = IpcRenderer()
    try:
        sync = SyncRenderer(renderer, stack)
        cm = renderer.connect(address, token=token, timeout=timeout, ssl_context=ssl_context)
        sync._open(sync._portal.wrap_async_context_manager(cm))
    except BaseException:
        stack.close()
        raise
    return sync
