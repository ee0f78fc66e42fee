"""What ports need of the running event loop itself: tasks no one else hosts, and a way back in.

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

``waker`` is the one other thing ports need of the loop: a way back onto it
from a garbage collection that may run anywhere (a collected port's peer must
hear ``"close"``).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ("loop_is_running", "start_on_loop", "waker")

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
        try:
            trio.lowlevel.spawn_system_task(fn)
        except RuntimeError:  # the run is ending: its system tasks are being cancelled
            return False
        return True
    task = loop.create_task(fn())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return True


#: What ``waker`` gave last, by the loop it serves (one bound method per loop,
#: shared by every port started on it).
_last_waker: tuple[object, Callable[[Callable[[], object]], object]] | None = None


def waker() -> Callable[[Callable[[], object]], object] | None:
    """A way to run a plain function soon on this thread's running loop, from anywhere.

    What it returns may be called from any thread and from inside the garbage
    collector (``MessagePortMain.__del__``): asyncio's ``call_soon_threadsafe``
    or trio's ``TrioToken.run_sync_soon``. ``None`` if no loop runs here.
    """
    global _last_waker
    loop: Any
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if not _trio_running():
            return None
        loop = sys.modules["trio"].lowlevel.current_trio_token()
    last = _last_waker
    if last is not None and last[0] is loop:
        return last[1]
    wake: Callable[[Callable[[], object]], object] = (
        loop.call_soon_threadsafe
        if isinstance(loop, asyncio.AbstractEventLoop)
        else loop.run_sync_soon
    )
    _last_waker = (loop, wake)
    return wake
