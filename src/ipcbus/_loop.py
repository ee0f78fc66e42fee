"""What ports need of the running event loop itself: tasks no one else hosts, and a way back in.

A ``MessagePortMain`` delivers in a task of its owner's task group (an
``IpcMain`` inside ``async with``, or a connected ``IpcRenderer``). A channel
made in a plain coroutine has no such owner, yet Electron's ports simply work
there. Its deliveries then run as tasks that the event loop itself owns, the
one place anyio offers no vocabulary for:

* asyncio: ``loop.create_task``, kept referenced by the loop's ``LoopHold``
  until done (so by the loop: one closed with tasks left pending takes them
  with it); the loop cancels whatever is left when it closes
  (``asyncio.run`` and ``asyncio.Runner`` do).
* trio: ``trio.lowlevel.spawn_system_task``; trio cancels system tasks when
  the main task ends.

The tasks are short: one drains a port's inbox and ends.

``LoopHold`` is the rest of what ports need of the loop: a place to keep
started ports alive for as long as the loop runs, and a way back onto it
from a garbage collection that may run anywhere (a collected port's peer
must hear ``"close"``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import weakref
from collections.abc import Callable, Coroutine
from contextlib import suppress
from functools import partial
from typing import Any

__all__ = (
    "LoopHold",
    "asyncio_callback_context",
    "loop_hold",
    "loop_is_running",
    "start_on_loop",
    "trio_running",
)

logger = logging.getLogger("ipcbus")


def trio_running() -> bool:
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
        return trio_running()
    return True


def start_on_loop(fn: Callable[[], Coroutine[Any, Any, None]]) -> bool:
    """Run ``fn()`` in a task of this thread's running loop; ``False`` if there is none."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if not trio_running():
            return False
        trio: Any = sys.modules["trio"]
        try:
            trio.lowlevel.spawn_system_task(fn)
        except RuntimeError:  # the run is ending: its system tasks are being cancelled
            return False
        return True
    hold = loop_hold()
    assert hold is not None  # (a loop runs)
    task = loop.create_task(fn())
    hold.tasks.add(task)  # a strong reference: asyncio keeps only weak ones
    task.add_done_callback(hold.tasks.discard)
    return True


class LoopHold:
    """What ports keep per running loop, for as long as the loop lives.

    ``pins``: started ports, kept alive while they could still receive;
    ``tasks``: on asyncio, the tasks :func:`start_on_loop` started. On
    asyncio (and uvloop) the hold is an attribute of the loop object itself,
    so it goes with the loop: no task, no table, nothing for user code that
    waits for all tasks to see. On trio it is held by a system task until the
    run ends. ``wake(fn)``: have ``fn()`` run on that loop soon, from any
    thread and from inside the garbage collector; ``False`` once the loop has
    ended. ``fn`` runs as a callback of the loop itself, not in a task: no
    code of the app can cancel it before it runs (code that cancels every
    other task is common at shutdown), and an error it raises is logged.
    """

    __slots__ = ("__weakref__", "_call", "pins", "tasks")

    def __init__(self, call: Callable[..., object] | None) -> None:
        self._call = call  # call_soon_threadsafe / run_sync_soon; None once ended
        self.pins: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # asyncio: start_on_loop's, until done

    def wake(self, fn: Callable[[], object]) -> bool:
        call = self._call
        if call is None:
            return False
        try:
            call(_quietly, fn)
        except RuntimeError:  # the loop is closed (trio: RunFinishedError)
            return False
        return True


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # a loop callback's error must not stop trio's run
        logger.exception("closing the channel of a collected message port failed")


def asyncio_callback_context() -> contextvars.Context:
    """A fresh context for wake-ups on asyncio, one that says it is asyncio's.

    Fresh: a wake-up must not carry (and keep alive) whatever context made
    the hold. Saying asyncio: anyio asks sniffio, when it is installed, which
    loop runs, and sniffio knows it in a task but not in a bare callback.
    """
    context = contextvars.Context()
    sniffio: Any = sys.modules.get("sniffio")
    if sniffio is not None:
        context.run(sniffio.current_async_library_cvar.set, "asyncio")
    return context


#: trio runs' holds, by ``id`` of the run's token, until the run ends.
_trio_holds: dict[int, LoopHold] = {}

#: Holds of asyncio loops that take no attributes (none known; custom loops may).
_other_holds: weakref.WeakKeyDictionary[Any, LoopHold] = weakref.WeakKeyDictionary()


def loop_hold() -> LoopHold | None:
    """This thread's running loop's ``LoopHold`` (made on first use); ``None`` if none runs."""
    try:
        loop: Any = asyncio.get_running_loop()
    except RuntimeError:
        return _trio_hold() if trio_running() else None
    hold: LoopHold | None = getattr(loop, "_ipcbus_hold", None)
    if hold is None:
        with suppress(TypeError):  # (a loop with no weak references is in no table)
            hold = _other_holds.get(loop)
    if hold is None:
        hold = LoopHold(_call_soon_threadsafe(loop))
        try:
            loop._ipcbus_hold = hold
        except AttributeError:  # a loop that takes no attributes: a weak table, which
            with suppress(TypeError):  # keeps it while the loop lives
                _other_holds[loop] = hold
    return hold


def _call_soon_threadsafe(loop: Any) -> Callable[..., object]:
    """``loop.call_soon_threadsafe`` in a wake-up's context, through a weak reference
    to the loop where it has them: the hold is the loop's, and must not keep it."""
    context = asyncio_callback_context()
    try:
        weak = weakref.ref(loop)
    except TypeError:
        return partial(loop.call_soon_threadsafe, context=context)

    def call(fn: Callable[..., object], arg: object) -> object:
        alive = weak()
        if alive is None:
            raise RuntimeError("the event loop is gone")
        return alive.call_soon_threadsafe(fn, arg, context=context)

    return call


def _trio_hold() -> LoopHold | None:
    trio: Any = sys.modules["trio"]
    token = trio.lowlevel.current_trio_token()
    hold = _trio_holds.get(id(token))
    if hold is None:
        hold = _trio_holds[id(token)] = LoopHold(token.run_sync_soon)
        try:
            trio.lowlevel.spawn_system_task(_keep, id(token), hold, trio)
        except RuntimeError:  # the run is ending
            del _trio_holds[id(token)]
            return None
    return hold


async def _keep(key: int, hold: LoopHold, trio: Any) -> None:
    """Hold a trio run's ``hold`` until the run ends; then let its pins go quietly."""
    try:
        await trio.sleep_forever()
    finally:
        if _trio_holds.get(key) is hold:
            del _trio_holds[key]
        hold._call = None
        pins, hold.pins = hold.pins, set()
        for port in pins:
            port._loop_ended()
