"""What main's listeners, handlers and hooks receive: the event types and ``DisconnectDetails``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ._calls import ReplySlot
from ._events import ConnectionTerminated
from ._wire import CloseCode

if TYPE_CHECKING:
    from ._webcontents import WebContents

__all__ = (
    "DisconnectDetails",
    "DisconnectReason",
    "IpcMainEvent",
    "IpcMainInvokeEvent",
    "disconnect_details",
)

DisconnectReason = Literal["clean-exit", "crashed", "killed", "connection-lost", "protocol-error"]


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


def disconnect_details(
    termination: ConnectionTerminated | None, exit_code: int | None
) -> DisconnectDetails:
    """Why a renderer went away, from how its connection ended and its exit code."""
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
