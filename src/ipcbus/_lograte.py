"""Warnings peers can cause in any number: a few a second at WARNING, the rest counted.

A flood of connections that end before their handshake (wrong tokens, idle
sockets dropped at ``max_pending_handshakes``, NATS connect requests) must not
turn into a flood of log lines: each IpcMain logs at most ``burst`` of them
per ``interval`` at WARNING, the rest at DEBUG, and says how many it held back.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

__all__ = ("WarningRate",)


class WarningRate:
    """At most ``burst`` warnings per ``interval`` seconds; the rest at DEBUG, counted."""

    __slots__ = ("_burst", "_held", "_interval", "_logger", "_started", "_used", "_what")

    def __init__(
        self, logger: logging.Logger, what: str, *, burst: int = 10, interval: float = 1.0
    ) -> None:
        self._logger = logger
        self._what = what  # what the lines are about, for the counts
        self._burst = burst
        self._interval = interval
        self._started = -math.inf  # when the current interval began
        self._used = 0  # warnings logged in it
        self._held = 0  # logged at DEBUG only since the last count was given

    def flush(self) -> None:
        """Say how many were held back, if any (main's shutdown: no later warning may come)."""
        if self._held:
            self._logger.warning("%d more %s were logged at DEBUG only", self._held, self._what)
            self._held = 0

    def warning(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._started >= self._interval:
            self.flush()
            self._started, self._used = now, 0
        if self._used < self._burst:
            self._used += 1
            self._logger.warning(msg, *args)
            return
        if not self._held:
            self._logger.warning(
                "more than %d %s within %g s: the rest are logged at DEBUG, and counted",
                self._burst,
                self._what,
                self._interval,
            )
        self._held += 1
        self._logger.debug(msg, *args)
