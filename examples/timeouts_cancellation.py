"""Timeouts and cancellation, both directions; nothing ever waits forever.

* ``invoke(..., timeout=s)`` raises ``IpcTimeoutError`` (a ``TimeoutError``)
  and tells the other side, whose handler is cancelled.
* Cancelling the calling task (a cancel scope, a task group) does the same.
* ``send_sync`` listeners are not cancelled (like Electron's): a timed-out
  ``send_sync`` just discards the late reply.
* Closing the connection fails every pending call at once with
  ``ConnectionClosedError`` and cancels the handlers serving it.

Everything runs in one process: ``IpcMain.connect_local()`` gives a renderer
connected through a real socket pair.

Run: ``python examples/timeouts_cancellation.py``
"""

from __future__ import annotations

from typing import Any

import anyio

from ipcbus import (
    ConnectionClosedError,
    IpcMain,
    IpcMainEvent,
    IpcMainInvokeEvent,
    IpcRendererEvent,
    IpcTimeoutError,
)

EXPECTED = """
1. IpcTimeoutError: invoke 'slow' to main got no reply within 0.2 s; \
the remote handler was told to stop
   it is a TimeoutError: True
   main's handler for 'slow' was cancelled
2. move_on_after: cancelled_caught=True
   main's handler for 'slow' was cancelled
3. task group cancelled while main's handler was running
   main's handler for 'slow' was cancelled
4. main -> renderer: IpcTimeoutError: invoke 'think' to renderer 1 got no reply within 0.2 s; \
the remote handler was told to stop
   the renderer's handler for 'think' was cancelled
5. send_sync: IpcTimeoutError: send_sync 'question' to main got no reply within 0.2 s; \
a late reply will be discarded
   the listener ran on and answered 'late answer'; that reply was discarded
   the connection is fine: slow(0) = 'done'
6. main closed the connection: ConnectionClosedError
   main's handler for 'slow' was cancelled
"""


async def main() -> None:
    ipc_main = IpcMain()
    started = anyio.Event()
    cancelled = anyio.Event()

    def reset() -> None:
        nonlocal started, cancelled
        started, cancelled = anyio.Event(), anyio.Event()

    @ipc_main.handle("slow")
    async def slow(event: IpcMainInvokeEvent, seconds: float) -> str:
        started.set()
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise  # always re-raise a cancellation
        return "done"

    release = anyio.Event()
    answered = anyio.Event()
    answer: list[Any] = []

    @ipc_main.on("question")
    async def question(event: IpcMainEvent) -> None:
        await release.wait()
        event.return_value = "late answer"  # the caller gave up: discarded
        answer.append(event.return_value)
        answered.set()

    async with ipc_main, ipc_main.connect_local() as renderer:
        contents = ipc_main.from_id(renderer.id)
        assert contents is not None

        # 1. A timeout.
        try:
            await renderer.invoke("slow", 60, timeout=0.2)
        except IpcTimeoutError as exc:
            print(f"1. IpcTimeoutError: {exc}")
            print(f"   it is a TimeoutError: {isinstance(exc, TimeoutError)}")
        await cancelled.wait()
        print("   main's handler for 'slow' was cancelled")

        # 2. The caller's own cancel scope.
        reset()
        with anyio.move_on_after(0.2) as scope:
            await renderer.invoke("slow", 60)
        print(f"2. move_on_after: cancelled_caught={scope.cancelled_caught}")
        await cancelled.wait()
        print("   main's handler for 'slow' was cancelled")

        # 3. Cancelling the task that waits, once the handler is known to run.
        reset()
        async with anyio.create_task_group() as tg:
            tg.start_soon(renderer.invoke, "slow", 60)
            await started.wait()
            tg.cancel_scope.cancel()
        print("3. task group cancelled while main's handler was running")
        await cancelled.wait()
        print("   main's handler for 'slow' was cancelled")

        # 4. The other direction: main calls the renderer's handler.
        think_cancelled = anyio.Event()

        @renderer.handle("think")
        async def think(event: IpcRendererEvent) -> None:
            try:
                await anyio.sleep_forever()
            finally:
                think_cancelled.set()

        try:
            await contents.invoke("think", timeout=0.2)
        except IpcTimeoutError as exc:
            print(f"4. main -> renderer: IpcTimeoutError: {exc}")
        await think_cancelled.wait()
        print("   the renderer's handler for 'think' was cancelled")

        # 5. send_sync: the listener is not cancelled; its late reply is dropped.
        try:
            await renderer.send_sync("question", timeout=0.2)
        except IpcTimeoutError as exc:
            print(f"5. send_sync: IpcTimeoutError: {exc}")
        release.set()
        await answered.wait()
        print(f"   the listener ran on and answered {answer[0]!r}; that reply was discarded")
        print(f"   the connection is fine: slow(0) = {await renderer.invoke('slow', 0)!r}")

        # 6. The connection ends while a call is pending.
        reset()
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                try:
                    await renderer.invoke("slow", 60)
                except ConnectionClosedError as exc:
                    print(f"6. main closed the connection: {type(exc).__name__}")

            tg.start_soon(call)
            await started.wait()
            await contents.close()
        await cancelled.wait()
        print("   main's handler for 'slow' was cancelled")


if __name__ == "__main__":
    anyio.run(main)
