"""Warnings peers can cause in any number: a few a second at WARNING, the rest counted.

A flood of connections that end before their handshake (wrong tokens, idle
sockets dropped at ``max_pending_handshakes``, NATS connect requests) must not
turn into a flood of log lines: each IpcMain logs at most ``burst`` of them
per ``interval`` at WARNING, the rest at DEBUG, and says how many it held back.
So must a renderer past its handshake that sends what a listener cannot take
or a guard refuses, frame after frame: those rates are per process
(``_calling``, ``_guards``), and errors (a listener that raised, with its
traceback) go the same way at ERROR.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

__all__ = ("WarningRate", "flush_per_process", "per_process", "restart_per_process")

#: The rates ``per_process`` made: IpcMain starts them afresh and flushes them.
_PER_PROCESS: list[WarningRate] = []


def per_process(logger: logging.Logger, what: str, *, burst: int = 10) -> WarningRate:
    """A rate for lines any connection of the process may cause (a module's)."""
    rate = WarningRate(logger, what, burst=burst)
    _PER_PROCESS.append(rate)
    return rate


def restart_per_process() -> None:
    """Say what each per-process rate held back, and give each a fresh burst.

    ``IpcMain`` calls it as it starts and as it ends: one main's flood is not
    charged to the next one (in tests, one after another), and what a flood
    held back is counted before main is gone.
    """
    for rate in _PER_PROCESS:
        rate.flush()
        rate.restart()


def flush_per_process() -> None:
    """Say what each per-process rate held back (a renderer leaving: nothing else will).

    Unlike :func:`restart_per_process`, the bursts go on: a renderer leaving
    must not give a flood in an ``IpcMain`` of the same process a fresh one.
    """
    for rate in _PER_PROCESS:
        rate.flush()


class WarningRate:
    """At most ``burst`` warnings per ``interval`` seconds; the rest at DEBUG, counted."""

    __slots__ = (
        "_burst",
        "_held",
        "_interval",
        "_lock",
        "_logger",
        "_started",
        "_used",
        "_what",
    )

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
        # Per-process rates are shared by every loop of the process (a sync
        # renderer's runs in a thread of its own). It guards the counts only:
        # no line is logged while it is held (a handler may log in turn).
        self._lock = threading.Lock()

    def flush(self) -> None:
        """Say how many were held back, if any (main's shutdown: no later warning may come)."""
        with self._lock:
            held, self._held = self._held, 0
        if held:
            self._logger.warning("%d more %s were logged at DEBUG only", held, self._what)

    def restart(self) -> None:
        """A fresh burst from now on (what was held back: :meth:`flush` first)."""
        with self._lock:
            self._started, self._used = -math.inf, 0

    def warning(self, msg: str, *args: Any) -> None:
        self._log(logging.WARNING, msg, args, None)

    def error(self, msg: str, *args: Any, exc_info: BaseException | None = None) -> None:
        """As :meth:`warning`, at ERROR, with the traceback of ``exc_info`` (not at DEBUG)."""
        self._log(logging.ERROR, msg, args, exc_info)

    def _log(self, level: int, msg: str, args: Any, exc_info: BaseException | None) -> None:
        now = time.monotonic()
        if now - self._started >= self._interval:
            self.flush()
        with self._lock:  # the counts only: the lines are logged outside it
            if now - self._started >= self._interval:
                self._started, self._used = now, 0
            within = self._used < self._burst
            if within:
                self._used += 1
            first_held = not within and not self._held
            if not within:
                self._held += 1
        if within:
            self._logger.log(level, msg, *args, exc_info=exc_info)
            return
        if first_held:
            self._logger.warning(
                "more than %d %s within %g s: the rest are logged at DEBUG, and counted",
                self._burst,
                self._what,
                self._interval,
            )
        if exc_info is not None:
            msg, args = f"{msg}: %r", (*args, exc_info)  # no traceback: a flood is costly
        self._logger.debug(msg, *args)
