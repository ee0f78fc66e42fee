"""Renderers that connect to a listening socket: ``Listener`` and its accept loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ._listensocket import CreatedListener
from ._transport import peer_pid

if TYPE_CHECKING:
    from .main import IpcMain

__all__ = ("Listener", "accept")


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


async def accept(main: IpcMain, listener: Listener, tg: anyio.abc.TaskGroup) -> None:
    """Accept renderers on ``listener`` until it closes; each is served in ``tg``."""
    tcp = listener.address.startswith("tcp:")

    async def handle(stream: anyio.abc.ByteStream) -> None:
        await main._serve(
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
        main._listeners_open.discard(listener)
        listener._done.set()
