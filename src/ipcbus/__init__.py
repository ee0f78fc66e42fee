"""ipcbus: Electron's IPC model (ipcMain, ipcRenderer, invoke/handle) for Python.

One main process (:class:`IpcMain`) serves any number of renderer processes
(:class:`IpcRenderer`) over unix sockets or TCP, with msgspec-encoded frames;
through NATS, several replicas of main serve one app (:meth:`IpcMain.join`).
"""

from __future__ import annotations

from ._errors import (
    AuthenticationError,
    ConnectionClosedError,
    FrameTooLargeError,
    HandlerExistsError,
    IpcError,
    IpcTimeoutError,
    NoHandlerError,
    ProtocolError,
    RemoteError,
    SerializationError,
    ValidationError,
)
from ._natsreplica import Replica
from ._runner import run
from ._streams import IpcStream
from ._wire import DEFAULT_MAX_FRAME_SIZE, MAX_PORTS_PER_FRAME, MIN_MAX_FRAME_SIZE, PROTOCOL_VERSION
from .main import (
    DisconnectDetails,
    IpcMain,
    IpcMainEvent,
    IpcMainInvokeEvent,
    Listener,
    WebContents,
)
from .ports import MessageChannelMain, MessageEvent, MessagePortMain
from .renderer import IpcRenderer, IpcRendererEvent, connect

__version__ = "0.1.0"

__all__ = (
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_PORTS_PER_FRAME",
    "MIN_MAX_FRAME_SIZE",
    "PROTOCOL_VERSION",
    "AuthenticationError",
    "ConnectionClosedError",
    "DisconnectDetails",
    "FrameTooLargeError",
    "HandlerExistsError",
    "IpcError",
    "IpcMain",
    "IpcMainEvent",
    "IpcMainInvokeEvent",
    "IpcRenderer",
    "IpcRendererEvent",
    "IpcStream",
    "IpcTimeoutError",
    "Listener",
    "MessageChannelMain",
    "MessageEvent",
    "MessagePortMain",
    "NoHandlerError",
    "ProtocolError",
    "RemoteError",
    "Replica",
    "SerializationError",
    "ValidationError",
    "WebContents",
    "__version__",
    "connect",
    "run",
)
