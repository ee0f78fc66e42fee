"""Liveness of one connection: heartbeats, and writes that never finish.

Timing writes here, rather than wrapping each write in a scope with a
deadline, keeps timers off the hot path: the hot path only bumps counters
(``Endpoint.reads``, ``Outbox.writes``), and :meth:`Liveness.check`, called
every ``tick`` seconds, reads them:

* Stalled: the writer's write has not finished, or (fast path) the transport
  holds unsent bytes and that did not shrink, for ``send_timeout`` seconds:
  the peer stopped reading, the link is ended.
* Silent: nothing read for ``heartbeat_timeout`` seconds while a heartbeat is
  configured: the link is ended. Every ``heartbeat_interval`` a Ping goes out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio

from ._protocol import OPEN

if TYPE_CHECKING:
    from ._endpoint import Endpoint

__all__ = ("Liveness",)


class Liveness:
    """What one connection's watchdog remembers between two looks."""

    __slots__ = (
        "_endpoint",
        "_interval",
        "_nonce",
        "_seen_reads",
        "_seen_unsent",
        "_seen_writes",
        "_send_timeout",
        "_silence_limit",
        "_silent",
        "_since_ping",
        "_stall_limit",
        "_stalled",
        "tick",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        send_timeout: float | None,
        heartbeat_interval: float | None,
        heartbeat_timeout: float | None,
    ) -> None:
        self._endpoint = endpoint
        self._send_timeout = send_timeout
        self._interval = heartbeat_interval
        self._silence_limit = heartbeat_timeout or (
            3 * heartbeat_interval if heartbeat_interval else math.inf
        )
        self._stall_limit = send_timeout or math.inf
        #: Seconds between two looks.
        self.tick = min(heartbeat_interval or math.inf, self._stall_limit / 4)
        self._seen_reads = self._seen_writes = self._seen_unsent = 0
        self._silent = self._stalled = self._since_ping = 0.0
        self._nonce = 0

    async def watch(self) -> None:
        """Look every ``tick`` seconds until the link is ended (or we are cancelled)."""
        self._seen_reads = self._endpoint.reads
        self._seen_writes = self._endpoint.outbox.writes
        while True:
            await anyio.sleep(self.tick)
            if await self.check(self.tick):
                return

    async def check(self, elapsed: float) -> bool:
        """Look at the counters ``elapsed`` seconds after the last look; ``True`` if it ended."""
        endpoint = self._endpoint
        outbox = endpoint.outbox
        direct = outbox.direct
        unsent = direct.unsent() if direct is not None else 0
        if (outbox.writing and outbox.writes == self._seen_writes) or (
            unsent and unsent >= self._seen_unsent
        ):
            self._stalled += elapsed
        else:
            self._stalled = 0.0
        self._seen_unsent = unsent
        if endpoint.reads != self._seen_reads or endpoint.dispatcher.paused:
            self._silent = 0.0
        else:
            self._silent += elapsed
        self._seen_reads, self._seen_writes = endpoint.reads, outbox.writes
        if self._stalled > self._stall_limit:
            endpoint.link_lost(
                f"{endpoint.name} stopped reading: a write made no progress "
                f"for {self._send_timeout} s"
            )
            await endpoint.stream.aclose()  # wakes the stuck writer
            return True
        interval = self._interval
        if endpoint.conn.state is not OPEN or not interval:
            return False
        if self._silent > self._silence_limit:
            endpoint.link_lost(f"no data from {endpoint.name} for {self._silent:.1f} s (heartbeat)")
            return True
        self._since_ping += elapsed
        if self._since_ping >= interval:
            self._since_ping = 0.0
            self._nonce += 1
            endpoint.conn.send_ping(self._nonce)
            outbox.kick()
        return False
