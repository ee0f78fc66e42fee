"""Per-connection ordering: listeners and handlers are *called* in send order (SPEC section 2)."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import ipcbus
from ipcbus import IpcMainEvent

from .helpers import running_main, spawn_script, wait_for

COUNT = 300
SEED = 1234

# Channel name -> (how the renderer calls it, whether main's callback is async).
CHANNELS = {
    "send-sync-cb": ("send", False),
    "send-async-cb": ("send", True),
    "sync-sync-cb": ("send_sync", False),
    "sync-async-cb": ("send_sync", True),
    "invoke-sync-cb": ("invoke", False),
    "invoke-async-cb": ("invoke", True),
}


def plan(count: int = COUNT, seed: int = SEED) -> list[str]:
    """The channel of each call, in send order (the same in a child: same seed)."""
    rng = random.Random(seed)
    names = sorted(CHANNELS)
    return [rng.choice(names) for _ in range(count)]


class Recorder:
    """Main's callbacks: each records its call number as its first action."""

    def __init__(self, ipc_main: ipcbus.IpcMain) -> None:
        self.called: list[int] = []
        self.finished: list[int] = []
        self.all_done = anyio.Event()
        for channel, (kind, is_async) in CHANNELS.items():
            fn = self._make(kind, is_async)
            if kind == "invoke":
                ipc_main.handle(channel, fn)
            else:
                ipc_main.on(channel, fn)

    def _done(self, n: int) -> None:
        self.finished.append(n)
        if len(self.finished) == COUNT:
            self.all_done.set()

    def _make(self, kind: str, is_async: bool) -> Any:
        if is_async:

            async def async_callback(event: Any, n: int) -> int:
                self.called.append(n)
                for _ in range(n % 3):  # finish in a different order than called
                    await anyio.lowlevel.checkpoint()
                if isinstance(event, IpcMainEvent):
                    event.return_value = n
                self._done(n)
                return n

            return async_callback

        def sync_callback(event: Any, n: int) -> int:
            self.called.append(n)
            if isinstance(event, IpcMainEvent):
                event.return_value = n
            self._done(n)
            return n

        return sync_callback


async def run_plan(renderer: ipcbus.IpcRenderer, channels: list[str]) -> list[Any]:
    """Issue every call in order from one task; replies are awaited concurrently.

    A send is queued before ``send`` returns. A request is queued by the
    first step of its task, which runs at the checkpoint right after it is
    started, so the frames leave in plan order.
    """
    results: list[Any] = [None] * len(channels)

    async def call(kind: str, channel: str, n: int) -> None:
        method = renderer.invoke if kind == "invoke" else renderer.send_sync
        results[n] = await method(channel, n)

    async with anyio.create_task_group() as tg:
        for n, channel in enumerate(channels):
            kind = CHANNELS[channel][0]
            if kind == "send":
                await renderer.send(channel, n)
                results[n] = n
            else:
                tg.start_soon(call, kind, channel, n)
                await anyio.lowlevel.checkpoint()
    return results


async def test_mixed_calls_from_one_local_renderer_are_called_in_send_order() -> None:
    channels = plan()
    assert {CHANNELS[c] for c in channels} == set(CHANNELS.values())  # every mix occurs
    with anyio.fail_after(20):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            recorder = Recorder(ipc_main)
            results = await run_plan(renderer, channels)
            await wait_for(recorder.all_done)
            assert recorder.called == list(range(COUNT))
            assert results == list(range(COUNT))
            assert sorted(recorder.finished) == list(range(COUNT))


CHILD = """
import sys
import anyio, ipcbus
sys.path.insert(0, sys.argv[1])
from ordering_plan import plan, run_plan

async def main():
    async with ipcbus.connect() as renderer:
        results = await run_plan(renderer, plan())
        await renderer.send("done", results == list(range(len(results))))
        await renderer.wait_closed()
anyio.run(main)
"""


async def test_mixed_calls_from_a_child_are_called_in_send_order(tmp_path: Path) -> None:
    # The child runs the same plan code: copy this module's plan and run_plan.
    import inspect
    import textwrap

    source = "\n".join(
        [
            "from __future__ import annotations",
            "import random",
            "from typing import Any",
            "import anyio",
            f"COUNT = {COUNT}",
            f"SEED = {SEED}",
            f"CHANNELS = {CHANNELS!r}",
            textwrap.dedent(inspect.getsource(plan)),
            textwrap.dedent(inspect.getsource(run_plan)),
        ]
    )
    (tmp_path / "ordering_plan.py").write_text(source)
    replies_ok: list[bool] = []
    done = anyio.Event()

    def on_done(event: IpcMainEvent, ok: bool) -> None:
        replies_ok.append(ok)
        done.set()

    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            recorder = Recorder(ipc_main)
            ipc_main.on("done", on_done)
            await spawn_script(ipc_main, tmp_path, CHILD, str(tmp_path))
            await wait_for(done, 20)
            await wait_for(recorder.all_done)
            assert recorder.called == list(range(COUNT))
            assert replies_ok == [True]


async def test_concurrent_async_handlers_start_in_order_and_finish_out_of_order() -> None:
    started: list[int] = []
    finished: list[int] = []
    gates = [anyio.Event() for _ in range(5)]
    all_started = anyio.Event()

    async def handler(event: Any, n: int) -> int:
        started.append(n)
        if len(started) == len(gates):
            all_started.set()
        await gates[n].wait()
        finished.append(n)
        return n

    with anyio.fail_after(10):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("h", handler)
            results: dict[int, int] = {}

            async def call(n: int) -> None:
                results[n] = await renderer.invoke("h", n)

            async with anyio.create_task_group() as tg:
                for n in range(len(gates)):
                    tg.start_soon(call, n)
                    await anyio.lowlevel.checkpoint()
                await wait_for(all_started)  # all run at once: none waits for another
                for gate in reversed(gates):
                    gate.set()
                    await anyio.lowlevel.checkpoint()
            assert started == [0, 1, 2, 3, 4]
            assert results == {n: n for n in range(5)}
            assert sorted(finished) == [0, 1, 2, 3, 4]


@pytest.mark.skipif(bool(os.environ.get("IPCBUS_NO_FASTPATH")), reason="a fast-path feature")
async def test_pushes_to_a_renderer_that_stops_reading_arrive_whole_and_in_order() -> None:
    """Main's pushes outrun a renderer that does not read: the transport refuses
    more (over its high-water mark), so the bytes already taken from the core go
    back in front of the rest and the writer task sends them; nothing is lost or
    reordered when the renderer reads again, and ``send`` waits (backpressure).

    The first six sends return at once on the fast path whatever the socket's
    buffer (the transport takes writes until it is over its high-water mark,
    then the core holds 256 KiB more); the sixth's write is the one refused."""

    from .faults._raw import RawPeer

    n, blob = 40, b"y" * (64 * 1024)
    sent = 0
    some_sent = anyio.Event()
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            async with RawPeer.connect(listener.address) as slow:
                contents = await slow.web_contents(ipc_main, listener.token)

                async def push_all() -> None:
                    nonlocal sent
                    for i in range(n):
                        await contents.send("push", i, blob)
                        sent += 1
                        if sent == 6:
                            some_sent.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(push_all)
                    await some_sent.wait()
                    assert sent < n  # send waits for the renderer (backpressure)
                    assert await slow.messages("push", n) == [[i, blob] for i in range(n)]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "anyio-streams"])
async def test_a_long_read_of_small_messages_is_delivered_whole_in_order_a_batch_at_a_time(
    monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    """Main takes a long read's frames a batch at a time (Connection.batch): every
    message still arrives, in order, and the call behind them sees all of them."""
    from ipcbus._protocol import Connection
    from ipcbus._wire import Message, Reply, Request, RequestKind

    from .faults._raw import RawPeer, frames, raw_args

    if not fast_path:
        monkeypatch.setenv("IPCBUS_NO_FASTPATH", "1")
    more = Connection.receive_more
    batches = 0

    def counting(self: Connection) -> bool:
        nonlocal batches
        batches += 1
        return more(self)

    monkeypatch.setattr(Connection, "receive_more", counting)
    n = 20_000
    got: list[int] = []
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.on("n", lambda event, i: got.append(i))
            ipc_main.handle("count", lambda event: len(got))
            listener = await ipc_main.listen()
            async with RawPeer.connect(listener.address) as peer:
                await peer.handshake(listener.token)
                burst = frames(*(Message("n", raw_args(i)) for i in range(n)))
                await peer.send(burst + frames(Request(1, RequestKind.INVOKE, "count", raw_args())))
                reply = await peer.receive()
    assert isinstance(reply, Reply) and reply.ok
    assert msgspec.msgpack.decode(reply.value) == n
    assert got == list(range(n))
    assert batches > 0  # some read was long enough to be cut into batches
