"""What an ``Endpoint`` asks of the side that owns it (main's ``Link``, a renderer).

The owner finds the listeners and handlers of a channel, makes the events
they receive, lands the ports a frame carries, and hears of the handshake
and the end. ``Gate`` is main's say on each call before it is dispatched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._events import (
    ConnectionTerminated,
    HandshakeCompleted,
    MessageReceived,
    PortClosed,
    PortMessageReceived,
    RequestReceived,
)
from ._wire import PortRef

if TYPE_CHECKING:
    from ._calls import ReplySlot
    from ._lograte import WarningRate
    from ._registry import Callback

__all__ = ("Gate", "Owner")


class Owner(Protocol):
    """What an Endpoint asks of the side that owns it (main or renderer)."""

    def find_listeners(self, channel: str) -> tuple[Callback, ...]: ...
    def find_handler(self, channel: str) -> Callback | None: ...
    def make_event(self, channel: str, slot: ReplySlot | None) -> Any: ...
    def handshake_completed(self, event: HandshakeCompleted) -> None: ...
    def terminated(self, event: ConnectionTerminated) -> None: ...
    def receive_ports(self, refs: Sequence[PortRef]) -> list[Any]: ...
    def port_event(self, event: PortMessageReceived | PortClosed) -> None: ...

    #: Where a connection that ends before its handshake is logged, if not
    #: straight at WARNING: main's, which peers can make end in any number.
    @property
    def warnings(self) -> WarningRate | None: ...

    # Made per message or call, so built here without a call through the owner:
    # ``_message_event(channel, _event_sender)`` (``make_event`` when a send_sync
    # reply slot comes with it) and ``_invoke_event(channel, _event_sender)``.
    @property
    def _message_event(self) -> Callable[[str, Any], Any]: ...
    @property
    def _invoke_event(self) -> Callable[[str, Any], Any]: ...
    @property
    def _event_sender(self) -> Any: ...


#: ``gate(event, ports)``: ``True`` to dispatch now; ``False`` if it rejected
#: the event or will dispatch it later (``Dispatcher.dispatch``).
Gate = Callable[[RequestReceived | MessageReceived, list[Any] | None], bool]
