"""The ipcbus exception tree.

Every exception the library raises on purpose derives from :class:`IpcError`::

    IpcError
    ├── HandlerExistsError        a second handle() for one channel
    ├── NoHandlerError            invoke/send_sync reached nobody
    ├── RemoteError               the other side's handler or listener raised
    ├── ValidationError           arguments did not fit the handler's annotations
    ├── SerializationError        (also TypeError) a value cannot be put on the wire
    ├── IpcTimeoutError           (also TimeoutError) no reply within the timeout
    ├── ConnectionClosedError     the link is gone, or was never there
    ├── ProtocolError             the peer broke docs/protocol.md
    │   └── FrameTooLargeError    a frame over the configured size limit
    └── AuthenticationError       wrong or missing token

Messages say what happened, on which channel, and what to do about it.
"""

from __future__ import annotations

__all__ = (
    "AuthenticationError",
    "ConnectionClosedError",
    "FrameTooLargeError",
    "HandlerExistsError",
    "IpcError",
    "IpcTimeoutError",
    "NoHandlerError",
    "ProtocolError",
    "RemoteError",
    "SerializationError",
    "ValidationError",
)


class IpcError(Exception):
    """Base class of every error ipcbus raises on purpose."""


class HandlerExistsError(IpcError):
    """Raised when ``handle(ch)`` is called for a channel that already has a handler."""


class NoHandlerError(IpcError):
    """Raised at the caller when ``invoke`` finds no handler, or ``send_sync`` no listener."""


class RemoteError(IpcError):
    """Raised at the caller when the remote handler or listener raised.

    Attributes:
        channel: the channel that was invoked.
        type_name: the remote exception's class name, e.g. ``"ValueError"``.
        remote_message: ``str()`` of the remote exception.
        remote_traceback: the remote traceback as text, or ``None`` when the
            other side does not send tracebacks.
    """

    def __init__(
        self,
        channel: str,
        type_name: str,
        remote_message: str,
        remote_traceback: str | None = None,
    ) -> None:
        self.channel = channel
        self.type_name = type_name
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        super().__init__(f"Error invoking remote method {channel!r}: {type_name}: {remote_message}")

    def __reduce__(self) -> tuple[object, ...]:
        args = (self.channel, self.type_name, self.remote_message, self.remote_traceback)
        return (type(self), args)


class ValidationError(IpcError):
    """Raised at the caller when arguments do not fit the handler's annotations.

    The handler is not run.
    """


class SerializationError(IpcError, TypeError):
    """Raised at the caller when an argument cannot be encoded; nothing is sent."""


class IpcTimeoutError(IpcError, TimeoutError):
    """Raised when a call gets no reply within its ``timeout``.

    The other side is told, and its handler is cancelled.
    """


class ConnectionClosedError(IpcError):
    """Raised when the connection is closed before or while a call is made."""


class ProtocolError(IpcError):
    """Raised when a peer breaks the wire protocol (``docs/protocol.md``)."""


class FrameTooLargeError(ProtocolError):
    """Raised when a frame exceeds the configured ``max_frame_size``."""


class AuthenticationError(IpcError):
    """Raised when a renderer presents a wrong or missing token."""


# Tracebacks and reprs name the public path (``ipcbus.NoHandlerError``), not this
# private module; pickle finds the classes there too, as ``ipcbus`` re-exports them.
for _name in __all__:
    globals()[_name].__module__ = "ipcbus"
del _name
