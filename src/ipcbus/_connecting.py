"""Reaching main from a renderer: where it is, the stream to it, a refusal as an error.

``find_main`` and ``raise_if_refused`` serve both renderers (``ipcbus.sync``
too); ``open_main`` opens the async renderer's stream, and ``Connecting`` is
what its ``connect()`` returns: an ``async with`` and nothing else.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Generator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, NoReturn, TypeVar

import anyio.abc

from ._errors import AuthenticationError, ConnectionClosedError, ProtocolError
from ._events import ConnectionTerminated
from ._transport import ENV_ADDRESS, ENV_FD, ENV_TOKEN, stream_from_socket
from ._transport import connect as open_stream
from ._wire import CloseCode

__all__ = ("Connecting", "find_main", "open_main", "raise_if_refused")

R = TypeVar("R")


def find_main(
    address: str | os.PathLike[str] | None, token: str | None
) -> tuple[socket.socket | str | os.PathLike[str], str]:
    """Where main is (the socket inherited from ``IpcMain.spawn``, else an address) and the token.

    Both renderers ask here. No address: the inherited socket, else
    ``$IPCBUS_ADDRESS``; no token: the inherited one, else ``$IPCBUS_TOKEN``.
    """
    if address is None:
        fd = os.environ.pop(ENV_FD, None)
        if fd is not None:
            # Spawned by IpcMain.spawn: our end of its socket pair, and its token.
            inherited_token = os.environ.pop(ENV_TOKEN, "")
            sock = socket.socket(fileno=int(fd))
            return sock, token if token is not None else inherited_token
        address = os.environ.get(ENV_ADDRESS)
        if not address:
            raise ConnectionClosedError(
                "no main process to connect to: this process was not started by "
                f"IpcMain.spawn() and ${ENV_ADDRESS} is not set; pass an address such as "
                "'unix:/path/to/socket' (Listener.address in main)"
            )
    if token is None:
        token = os.environ.get(ENV_TOKEN, "")
    return address, token


async def open_main(
    address: str | os.PathLike[str] | None, token: str | None, ssl_context: ssl.SSLContext | None
) -> tuple[anyio.abc.ByteStream, str, bool]:
    """The async renderer's stream to main, the token, and whether it goes over TCP."""
    where, token = find_main(address, token)
    if isinstance(where, socket.socket):
        return await stream_from_socket(where), token, False
    tcp = str(where).startswith("tcp:")
    return await open_stream(where, ssl_context), token, tcp


def raise_if_refused(termination: ConnectionTerminated | None) -> None:
    """Raise what a handshake that main ended means to the caller; nothing if it did not end."""
    if termination is None:
        return
    if termination.code is CloseCode.AUTHENTICATION_FAILED:
        raise AuthenticationError(
            f"main refused the connection: {termination.reason}; check the token "
            "(Listener.token in main, token= or $IPCBUS_TOKEN here)"
        )
    if termination.code is CloseCode.TOO_MANY_CONNECTIONS:
        raise ConnectionClosedError(f"main refused the connection: {termination.reason}")
    if termination.code in (
        CloseCode.VERSION_MISMATCH,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.FRAME_TOO_LARGE,
    ):
        raise ProtocolError(f"main closed the connection: {termination.reason}")
    raise ConnectionClosedError(
        f"main closed the connection during the handshake: {termination.reason}"
    )


class Connecting(AbstractAsyncContextManager[R]):
    """What the async ``connect()`` returns: an async context manager, and nothing else.

    ``await connect(...)`` or a plain ``with connect(...)`` would otherwise
    fail with Python's generic TypeError about an ``_AsyncGeneratorContextManager``;
    this says what to write instead.
    """

    __slots__ = ("_cm", "_open", "_usage", "_what")

    def __init__(
        self, open_: Callable[[], AbstractAsyncContextManager[R]], what: str, usage: str
    ) -> None:
        self._open = open_
        self._what = what
        self._usage = usage
        self._cm: AbstractAsyncContextManager[R] | None = None

    async def __aenter__(self) -> R:
        if self._cm is not None:
            raise RuntimeError(f"{self._what} was already entered; call connect() again")
        self._cm = self._open()
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._cm is not None, "__aexit__ without __aenter__"
        return await self._cm.__aexit__(exc_type, exc, tb)

    def __await__(self) -> Generator[Any, None, NoReturn]:
        raise TypeError(
            f"{self._what} cannot be awaited: it is an async context manager, write '{self._usage}'"
        )

    def __enter__(self) -> NoReturn:
        raise TypeError(
            f"{self._what} needs 'async with', not 'with': write '{self._usage}' "
            "(in blocking code, use ipcbus.sync.connect)"
        )

    def __exit__(self, *exc_info: object) -> None:  # never reached: __enter__ raises
        return None
