"""Fuzzing a live main (issue 3, "what it must show" 2, over real sockets).

10,000 random or mutated byte streams, one connection each, 32 at a time,
against one listening main, while a healthy renderer keeps calling it. For
every stream main must do exactly what its sans-I/O core decides for the same
bytes (``_streams.oracle``): say Welcome if and only if the handshake
succeeds, answer only requests that were made, and end with the Goodbye the
core chose (or none, when the peer ended it). main logs no internal error and
the healthy renderer is answered throughout and at the end.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

import anyio
import pytest

from ipcbus._events import HandshakeCompleted, RequestReceived
from ipcbus._wire import Body, Goodbye, Pong, Reply, Welcome

from ._raw import RawPeer, bench
from ._streams import closing_code, make_stream, oracle

TOKEN = "fuzz-token-0123456789"
STREAMS = 10_000
BATCH = 500
CONCURRENCY = 32
MAX_FRAME = 64 * 1024
SEED = 3_2026


def _check(index: int, stream: bytes, bodies: list[Body], seen: Counter[str]) -> None:
    events, _ = oracle(stream, TOKEN, MAX_FRAME)
    where = f"stream {index} (seed {SEED}): {stream!r} -> {bodies!r}"
    shook = isinstance(events[0], HandshakeCompleted)
    assert (bool(bodies) and isinstance(bodies[0], Welcome)) == shook, where
    goodbyes = [body for body in bodies if isinstance(body, Goodbye)]
    assert len(goodbyes) <= 1, where
    expected = closing_code(events)
    if expected is None:
        assert not goodbyes, where
    else:
        assert goodbyes and bodies[-1] is goodbyes[0], where
        assert goodbyes[0].code is expected, where
        assert goodbyes[0].reason == events[-1].reason, where  # type: ignore[union-attr]
    requested = {event.request_id for event in events if isinstance(event, RequestReceived)}
    replied = [body.request_id for body in bodies if isinstance(body, Reply)]
    assert len(replied) == len(set(replied)) and set(replied) <= requested, where
    allowed = (Welcome, Reply, Pong, Goodbye)
    assert all(isinstance(body, allowed) for body in bodies), where
    seen.update(type(body).__name__ for body in bodies)
    seen["ended by a Goodbye" if goodbyes else "ended by the peer"] += 1


async def test_ten_thousand_streams_against_a_live_main(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="ipcbus")  # the warnings are expected: 7,000 of them
    rng = random.Random(SEED)
    streams = [make_stream(rng, TOKEN) for _ in range(STREAMS)]
    with anyio.fail_after(150):
        async with bench(token=TOKEN, max_frame_size=MAX_FRAME) as setup:
            ipc_main = setup.ipc_main
            ipc_main.handle("echo", lambda event, *args: list(args))
            ipc_main.on("note", lambda event, *args: None)

            @ipc_main.on("sync")
            def sync(event: object, *args: object) -> None:
                event.return_value = len(args)  # type: ignore[attr-defined]

            address = setup.listener.address
            limiter = anyio.CapacityLimiter(CONCURRENCY)
            done = 0
            healthy_calls = 0
            seen: Counter[str] = Counter()

            async def one(index: int) -> None:
                nonlocal done
                async with limiter, RawPeer.connect(address) as peer:
                    await peer.send(streams[index])
                    await peer.send_eof()
                    with anyio.fail_after(10):
                        bodies = await peer.until_closed()
                _check(index, streams[index], bodies, seen)
                done += 1

            async def keep_calling() -> None:
                nonlocal healthy_calls
                while True:
                    with anyio.fail_after(5):
                        assert await setup.healthy.invoke("add", healthy_calls, 1) == (
                            healthy_calls + 1
                        )
                    healthy_calls += 1
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as background:
                background.start_soon(keep_calling)
                for start in range(0, STREAMS, BATCH):
                    async with anyio.create_task_group() as tg:
                        for index in range(start, min(start + BATCH, STREAMS)):
                            tg.start_soon(one, index)
                    await setup.check_healthy()
                background.cancel_scope.cancel()
            assert done == STREAMS
            print(f"\n{STREAMS} streams: {dict(seen)}; healthy invokes meanwhile: {healthy_calls}")
            # The streams reach every part of main, not just the handshake.
            assert seen["Welcome"] > STREAMS / 2 and seen["Reply"] > STREAMS / 20, seen
            assert seen["Pong"] > 0 and seen["ended by the peer"] > 0, seen
            assert healthy_calls > 10
            assert ipc_main.get_all_web_contents() == [ipc_main.from_id(setup.healthy.id)], (
                "every fuzz connection has ended"
            )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:5]
