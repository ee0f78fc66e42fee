"""What an ``Endpoint`` keeps, declared once for the type checks of its base classes.

``_endpoint.Endpoint`` is one object in three rooms: itself (the reader and
the start of the connection), ``_delivered.DeliveredReads`` (the fast path's
reads) and ``_ending.Ending`` (the end). mypy checks each base class alone, so
each must know the attributes ``Endpoint.__init__`` sets; this class says
them once. At run time it is an empty class with empty ``__slots__``: the
values live in ``Endpoint``'s slots.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio
    import anyio.abc

    from ._calls import Calls
    from ._dispatch import Dispatcher
    from ._events import ConnectionTerminated
    from ._liveness import Liveness, Watcher
    from ._outbox import Outbox
    from ._owner import Owner
    from ._protocol import Connection

__all__ = ("EndpointParts",)


class EndpointParts:
    """The attributes ``Endpoint.__init__`` sets, and what each base class calls on another."""

    if not TYPE_CHECKING:  # the values are in Endpoint's slots, which mypy
        __slots__ = ()  # cannot see from a base class: it checks one alone

    if TYPE_CHECKING:
        conn: Connection
        name: str
        stream: anyio.abc.ByteStream
        reads: int
        outbox: Outbox
        calls: Calls
        dispatcher: Dispatcher
        termination: ConnectionTerminated | None
        _closed: anyio.Event | None
        _done: bool
        _warned: bool
        _welcomed: bool
        _ending: bool
        _tg: anyio.abc.TaskGroup
        _owner: Owner
        _reader_scope: anyio.CancelScope | None
        _liveness: Liveness | None
        _sweeper: Watcher | None
        _on_end: Callable[[], Coroutine[Any, Any, None]] | None
        _on_end_now: Callable[[], bool] | None

        def handle_events(self) -> None: ...

        def link_lost(self, reason: str) -> None: ...
