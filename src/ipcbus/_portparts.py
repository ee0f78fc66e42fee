"""The small parts message ports are made of (``ports``, and both routers).

What an end's inbox holds (``Item``, ``CLOSE``), where its deliveries run
(``PortHost``, ``current_host``), what a routed end asks of the connection
that carries it (``Router``), and what listeners receive (``MessageEvent``).
None of them needs a port at run time, so ``ports`` and the routers import
them without importing each other.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio.abc
import msgspec

from ._loop import LoopHold
from ._values import decode_value

if TYPE_CHECKING:
    from ._portends import Parking
    from .ports import MessagePortMain

__all__ = (
    "CLOSE",
    "Close",
    "Item",
    "Relayed",
    "MessageEvent",
    "PortHost",
    "Queued",
    "Reaper",
    "Router",
    "current_host",
)


class Close:
    """The end of a port's message sequence: the channel is closed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CLOSE"


CLOSE: Final = Close()


class Item:
    """One message in flight or queued: encoded data and the ports it carries."""

    __slots__ = ("data", "ports")

    def __init__(self, data: msgspec.Raw, ports: list[MessagePortMain]) -> None:
        self.data = data
        self.ports = ports


class Relayed(Item):
    """A renderer's message on a routed end, carried on by main's router as it came.

    No code in main sees its ports, so they stay charged to the renderer that
    made them (``max_open_ports``) where they go on to another renderer; ports
    main's own code sends on are main's to answer for.

    One queued in the inbox of an end main holds is *parked*: its bytes count
    against the renderer that sent it (``Parking``) until it is taken
    from there (``Router.took``), so a renderer posting to a port main does
    not read cannot grow main without bound.
    """

    __slots__ = ("parked", "source")

    def __init__(self, data: msgspec.Raw, ports: list[MessagePortMain], source: Parking) -> None:
        # Item.__init__, inline (once per message main relays)
        self.data = data
        self.ports = ports
        self.source = source  # what the renderer it came from has parked
        self.parked = False  # counted in ``source`` (and its end's ``parked``)


Queued = Item | Close


class PortHost:
    """Where deliveries run: the task group of an ``IpcMain`` or a connection.

    ``hold`` is its loop's ``LoopHold``, the way back onto that loop from a
    garbage collection (a router's collected ends close there). Held weakly:
    an ``IpcMain`` that has stopped must not keep its last loop alive, yet
    ends collected after it stopped still close there while that loop lives.
    """

    __slots__ = ("_hold", "_task_group")

    def __init__(self, task_group: Callable[[], anyio.abc.TaskGroup | None]) -> None:
        self._task_group = task_group
        self._hold: weakref.ref[LoopHold] | None = None

    @property
    def hold(self) -> LoopHold | None:
        return self._hold() if self._hold is not None else None

    @hold.setter
    def hold(self, hold: LoopHold | None) -> None:
        self._hold = weakref.ref(hold) if hold is not None else None

    def start_soon(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``fn`` in a task; ``False`` if the owner is no longer running."""
        tg = self._task_group()
        if tg is None:
            return False
        try:
            tg.start_soon(fn)
        except RuntimeError:  # the task group is shutting down
            return False
        return True


class Reaper:
    """Ends whose objects were collected, closed on their loop: what both routers share.

    ``collected`` runs inside ``MessagePortMain.__del__`` (in the collector, in
    any thread): it only queues the end and wakes the loop. ``reap`` runs on
    the loop and hands each end to ``close``, which checks it is still gone.
    """

    __slots__ = ("_close", "_due", "_host", "_queue")

    def __init__(self, host: PortHost, close: Callable[[int], None]) -> None:
        self._host = host
        self._close = close
        self._queue: deque[int] = deque()  # appended in any thread, drained here
        self._due = False  # a reap is on its way

    def __bool__(self) -> bool:
        return bool(self._queue)

    def collected(self, wire: int) -> None:
        self._queue.append(wire)
        if not self._due:
            self._wake()

    def rebound(self) -> None:
        """The host runs on a new loop: a reap due on the old one will not come, and
        ends collected meanwhile are reaped on this one."""
        self._due = False
        if self._queue:
            self._wake()

    def _wake(self) -> None:
        if (hold := self._host.hold) is not None:
            self._due = True
            if not hold.wake(self.reap):  # that loop has ended
                self._due = False

    def reap(self) -> None:
        self._due = False
        queue, close = self._queue, self._close
        while queue:
            close(queue.popleft())


#: The host of ports created here: set inside ``async with ipc_main:`` and
#: while an ``IpcRenderer`` is connected.
current_host: ContextVar[PortHost | None] = ContextVar("ipcbus_port_host", default=None)


class Router(Protocol):
    """What a routed port asks of the side that carries it (``_portroute``, ``_rendererports``)."""

    host: PortHost

    def post(self, port: MessagePortMain, data: msgspec.Raw, ports: list[MessagePortMain]) -> None:
        """``port`` posted ``data`` carrying ``ports`` (checked, not yet neutered)."""

    def close(self, port: MessagePortMain) -> None:
        """``port`` was closed by its holder."""

    def moved(self, old: MessagePortMain, new: MessagePortMain) -> None:
        """The end held by ``old`` is now held by ``new`` (same process)."""

    def peer_of(self, port: MessagePortMain) -> MessagePortMain | None:
        """The other end, if it is an object in this process; else ``None``."""

    def took(self, wire: int, item: Relayed) -> None:
        """A parked ``item`` was taken from the inbox of end ``wire`` (delivered, or dropped)."""

    def collected(self, wire: int) -> None:
        """The object holding end ``wire`` was garbage-collected while the channel was open.

        Called from ``MessagePortMain.__del__``: inside the collector, maybe in
        another thread. It may only note the end and wake its loop (``PortHost.hold``).
        """


class MessageEvent:
    """What ``"message"`` listeners and ``async for`` receive.

    Attributes:
        data: the posted message, in its msgpack form (a tuple arrives as a
            list, as with ``send``); decoded on first access.
        ports: the ports that travelled with it, else empty.
    """

    __slots__ = ("_data", "_raw", "ports")

    _UNDECODED: Final[Any] = object()

    def __init__(self, raw: msgspec.Raw, ports: list[MessagePortMain]) -> None:
        self._raw = raw
        self._data: Any = MessageEvent._UNDECODED
        self.ports = ports

    @property
    def data(self) -> Any:
        if self._data is MessageEvent._UNDECODED:
            self._data = decode_value(self._raw)
        return self._data

    def __repr__(self) -> str:
        return f"<MessageEvent data={self.data!r} ports={len(self.ports)}>"
