"""Tasks owned by the running event loop, for ports that no ``IpcMain`` or connection hosts.

A ``MessagePortMain`` delivers in a task of its owner's task group (an
``IpcMain`` inside ``async with``, or a connected ``IpcRenderer``). A channel
made in a plain coroutine has no such owner, yet Electron's ports simply work
there. Its deliveries then run as tasks that the event loop itself owns, the
one place anyio offers no vocabulary for:

* asyncio: ``loop.create_task``, kept referenced here until done; the loop
  cancels whatever is left when it closes (``asyncio.run`` and
  ``asyncio.Runner`` do).
* trio: ``trio.lowlevel.spawn_system_task``; trio cancels system tasks when
  the main task ends.

The tasks are short: one drains a port's inbox and ends.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ("loop_is_running", "start_on_loop")

_tasks: set[asyncio.Task[None]] = set()  # strong references: asyncio keeps only weak ones


def _trio_running() -> bool:
    trio: Any = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


def loop_is_running() -> bool:
    """Whether this thread runs an event loop that :func:`start_on_loop` can use."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _trio_running()
    return True


def start_on_loop(fn: Callable[[], Coroutine[Any, Any, None]]) -> bool:
    """Run ``fn()`` in a task of this thread's running loop; ``False`` if there is none."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if not _trio_running():
            return False
        trio: Any = sys.modules["trio"]
        trio.lowlevel.spawn_system_task(fn)
        return True
    task = loop.create_task(fn())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return True
