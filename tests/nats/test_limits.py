"""What a NATS deployment refuses: wrong credentials, an app nobody serves, large frames."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import msgspec
import pytest

import ipcbus
import nats
from ipcbus import _nats, _natsclient
from ipcbus._nats import ConnectRequest, connect_subject
from ipcbus._natsreplica import CONNECT_QUEUE_PER_WAITING, WAITING_PER_PENDING
from ipcbus._receiving import _body_decoder
from ipcbus._wire import CloseCode

from ..helpers import running_main
from .conftest import NatsServer

FAST: dict[str, Any] = {"heartbeat_interval": 0.5}


async def test_nats_credentials_are_checked_by_the_server(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, "authorization { user: alice, password: s3cret }\n")
    try:
        with anyio.fail_after(30):
            async with running_main(**FAST) as ipc_main:
                ipc_main.handle("add", lambda event, a, b: a + b)
                with pytest.raises(ipcbus.ConnectionClosedError, match="refused the credentials"):
                    await ipc_main.join(server.url, app="shop", user="alice", password="wrong")
                await ipc_main.join(server.url, app="shop", user="alice", password="s3cret")
                with pytest.raises(ipcbus.ConnectionClosedError, match="refused the credentials"):
                    async with ipcbus.connect(server.url, app="shop"):
                        pass
                async with ipcbus.connect(
                    server.url, app="shop", user="alice", password="s3cret"
                ) as renderer:
                    assert await renderer.invoke("add", 2, 3) == 5
    finally:
        server.stop()


async def test_an_app_token_is_checked_too(nats_url: str) -> None:
    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            await ipc_main.join(nats_url, app="shop", token="app-secret")
            with pytest.raises(ipcbus.AuthenticationError):
                async with ipcbus.connect(nats_url, app="shop", token="guess"):
                    pass
            async with ipcbus.connect(nats_url, app="shop", token="app-secret") as renderer:
                assert await renderer.invoke("ping") == "pong"


async def test_connecting_to_an_app_nobody_serves_names_the_app(nats_url: str) -> None:
    with anyio.fail_after(10):
        with pytest.raises(ipcbus.ConnectionClosedError, match="no replica serves app 'ghost'"):
            async with ipcbus.connect(nats_url, app="ghost"):
                pass
        with pytest.raises(ValueError, match="app must be"):
            async with ipcbus.connect(nats_url, app="a.b"):
                pass
        with pytest.raises(TypeError, match="NATS options need app"):
            async with ipcbus.connect("tcp://127.0.0.1:1", user="alice"):
                pass


async def test_a_frame_over_max_payload_fails_at_its_caller(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, "max_payload: 8192\n")
    try:
        with anyio.fail_after(30):
            async with running_main(**FAST) as ipc_main:
                ipc_main.handle("echo", lambda event, value: value)
                ipc_main.handle("big", lambda event: b"x" * 20_000)
                await ipc_main.join(server.url, app="shop")
                async with ipcbus.connect(server.url, app="shop") as renderer:
                    assert await renderer.invoke("echo", b"x" * 4000) == b"x" * 4000
                    for call in (renderer.invoke, renderer.send):
                        with pytest.raises(ipcbus.FrameTooLargeError, match="max_payload is 8192"):
                            await call("echo", b"x" * 10_000)
                    with pytest.raises(ipcbus.RemoteError, match="max_payload is 8192"):
                        await renderer.invoke("big")
                    (contents,) = ipc_main.get_all_web_contents()
                    with pytest.raises(ipcbus.FrameTooLargeError, match="max_payload is 8192"):
                        await contents.send("push", b"x" * 10_000)
                    with pytest.raises(ipcbus.FrameTooLargeError, match=r"max_payload \(8192\)"):
                        await ipc_main.broadcast("news", b"x" * 10_000)
                    assert await renderer.invoke("echo", "still fine") == "still fine"
    finally:
        server.stop()


async def test_a_renderer_sending_faster_than_its_replica_reads_is_cut_off_at_a_bound(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS has no backpressure: what a renderer sends while main does not read waits
    in main, up to ``max_queued`` bytes per connection; past it, that connection ends
    (``"connection-lost"``, saying why) and main serves everyone else."""
    monkeypatch.setattr(_nats, "MAX_QUEUED", 256 * 1024)  # the bound: 4 x max_payload
    gone = anyio.Event()
    details: list[ipcbus.DisconnectDetails] = []
    server = ipcbus.IpcMain(max_in_flight=1, **FAST)
    release = anyio.Event()

    async def hold(event: ipcbus.IpcMainEvent) -> None:
        await release.wait()  # main's one call in flight: it reads no more meanwhile

    with anyio.fail_after(30):
        async with server as ipc_main:
            ipc_main.on("hold", hold)
            ipc_main.handle("ping", lambda event: "pong")
            ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
            await ipc_main.join(nats_url, app="fast")
            async with ipcbus.connect(nats_url, app="fast") as other:
                async with ipcbus.connect(nats_url, app="fast") as flooder:
                    frames = flooder._endpoint.stream  # type: ignore[union-attr]
                    bound = 4 * frames._nc.max_payload  # type: ignore[attr-defined]
                    part = b"x" * (frames.max_frame_size - 1024)  # type: ignore[attr-defined]
                    await flooder.send("hold")
                    for _ in range(bound // len(part) + 4):
                        await flooder.send("sink", part)
                    await gone.wait()
                    release.set()
                assert await other.invoke("ping") == "pong"
    assert details[0].reason == "connection-lost"
    assert f"more than {bound} bytes of messages waited to be read" in details[0].message


async def test_main_pushing_more_than_a_replica_would_take_to_a_busy_renderer_gets_through(
    nats_url: str,
) -> None:
    """A renderer trusts its main further than a replica trusts a renderer (main
    cannot pace its pushes over NATS): 20 MB pushed while the renderer reads
    no more than its read-ahead (``READ_AHEAD_BYTES``) all arrive, in order."""
    chunks, size = 22, 900_000
    release, arrived, done = anyio.Event(), anyio.Event(), anyio.Event()
    got: list[int] = []
    renderer = ipcbus.IpcRenderer(max_in_flight=1, **FAST)

    @renderer.on("hold")
    async def hold(event: ipcbus.IpcRendererEvent) -> None:
        await release.wait()  # its one call in flight: it reads no more meanwhile

    @renderer.on("chunk")
    def chunk(event: ipcbus.IpcRendererEvent, i: int, data: bytes) -> None:
        got.append(i)
        if len(got) == chunks:
            done.set()

    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:
            await ipc_main.join(nats_url, app="push")
            async with renderer.connect(nats_url, app="push"):
                frames = renderer._endpoint.stream  # type: ignore[union-attr]
                deliver = frames.deliver
                big = 0

                def counting(msg: Any) -> None:
                    nonlocal big
                    deliver(msg)
                    big += len(msg.data) > size
                    if big == chunks:
                        arrived.set()

                frames.deliver = counting
                (contents,) = ipc_main.get_all_web_contents()
                await contents.send("hold")
                for i in range(chunks):
                    await contents.send("chunk", i, b"x" * size)
                await arrived.wait()  # all of it waits in the renderer, nearly all unread
                assert frames._queued > _nats.MAX_QUEUED
                release.set()
                await done.wait()
                assert renderer.is_connected()
    assert got == list(range(chunks))


def test_empty_and_tiny_messages_count_against_the_bound_too() -> None:
    """Each waiting message is charged its own bytes and ``MESSAGE_COST``: a flood of
    empty ones (which a peer can publish with valid sequence numbers) meets the bound."""

    class Msg:
        def __init__(self, seq: int) -> None:
            self.headers = {_nats.SEQ_HEADER: str(seq)}
            self.data = b""

    client = _natsclient.NatsClient(SimpleNamespace(max_payload=1024), "nowhere")  # type: ignore[arg-type]
    frames = _nats.NatsFrames(client, owns_client=False, max_queued=0)
    bound = frames.max_queued  # four of the server's largest messages: 4,096 bytes
    for seq in range(1, bound + 2):  # as many empty messages as the bound has bytes
        frames.deliver(Msg(seq))  # type: ignore[arg-type]
    assert frames.lost_reason is not None
    assert f"more than {bound} bytes" in frames.lost_reason
    assert not frames._inbox


def test_the_nats_transport_says_it_needs_asyncio(nats_url: str) -> None:
    async def main() -> None:
        async with ipcbus.IpcMain() as ipc_main:
            with pytest.raises(RuntimeError, match="asyncio only"):
                await ipc_main.join(nats_url, app="shop")
        with pytest.raises(RuntimeError, match="asyncio only"):
            async with ipcbus.connect(nats_url, app="shop"):
                pass

    anyio.run(main, backend="trio")


async def test_a_flood_of_connect_requests_costs_a_replica_a_bounded_number_of_links(
    nats_url: str,
) -> None:
    """Anyone who may publish on the app's connect subject can ask for connections
    faster than it completes them: each waits in the replica's own bounded queue until
    its Hello (one more drops the oldest), as a small record with no endpoint (main
    holds no link for a renderer that never spoke), and renderers with the token
    still get in. Requests the replica has not taken yet wait in nats-py's queue, of
    ``CONNECT_QUEUE_PER_WAITING`` times that many: past it nats-py drops them (as a
    slow consumer, which ``error_cb`` hears of)."""
    requests = 2000
    dropped = 0
    answered = anyio.Event()
    answers = 0

    def settled() -> None:
        if answers + dropped == requests:
            answered.set()

    async def on_error(exc: Exception) -> None:
        nonlocal dropped
        if isinstance(exc, nats.errors.SlowConsumerError):
            dropped += 1
            settled()

    with anyio.fail_after(60):
        async with running_main(max_pending_handshakes=8, **FAST) as ipc_main:
            limit = WAITING_PER_PENDING * 8
            ipc_main.handle("ping", lambda event: "pong")
            replica = await ipc_main.join(nats_url, app="flood", error_cb=on_error)
            intruder = await nats.connect(nats_url)
            most = waiting = 0

            async def on_answer(msg: Any) -> None:
                nonlocal answers, most, waiting
                answers += 1
                most = max(most, len(ipc_main._links))  # those being dropped too
                waiting = max(waiting, len(replica._unheard), len(replica._waiting.links))
                settled()

            inbox = intruder.new_inbox()
            await intruder.subscribe(f"{inbox}.reply.*", cb=on_answer)
            await ask_for_connections(intruder, "flood", inbox, requests)
            await answered.wait()
            await intruder.close()
            assert waiting <= limit
            assert most == 0  # no endpoint for a renderer that has not spoken
            assert answers >= CONNECT_QUEUE_PER_WAITING * limit  # at least a queue's worth
            async with ipcbus.connect(nats_url, app="flood") as renderer:
                assert await renderer.invoke("ping") == "pong"


async def test_many_honest_renderers_asking_at_once_all_get_in(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 renderers with the token ask a replica for a connection at once (a fleet
    started together, or after a replica's restart), each 50 ms from the NATS server:
    all get in with the default max_pending_handshakes (64), which bounds a socket
    listener's waiting connections, since a replica's own bound is 16 times that."""
    renderers, latency = 200, 0.05
    failures: list[BaseException] = []
    with anyio.fail_after(60):
        async with running_main() as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            await ipc_main.join(nats_url, app="crowd")
            opened = 0
            all_open = anyio.Event()
            real_open = _natsclient.NatsClient.open

            async def open_then_wait(*args: Any, **kwargs: Any) -> _natsclient.NatsClient:
                nonlocal opened
                client = await real_open(*args, **kwargs)
                opened += 1
                if opened == renderers:
                    all_open.set()
                await all_open.wait()  # every one on NATS before any asks
                return client

            monkeypatch.setattr(_natsclient.NatsClient, "open", open_then_wait)
            real_publish = _nats.NatsFrames._publish

            async def far_publish(self: _nats.NatsFrames, body: memoryview) -> None:
                if self._owns_client and not getattr(self, "_said_hello", False):
                    self._said_hello = True  # type: ignore[attr-defined]
                    await anyio.sleep(latency)  # stands for the network: nothing to await
                await real_publish(self, body)

            monkeypatch.setattr(_nats.NatsFrames, "_publish", far_publish)

            async def one() -> None:
                try:
                    async with ipcbus.connect(nats_url, app="crowd") as renderer:
                        assert await renderer.invoke("ping") == "pong"
                except ipcbus.ConnectionClosedError as exc:
                    failures.append(exc)

            async with anyio.create_task_group() as tg:
                for _ in range(renderers):
                    tg.start_soon(one)
    assert not failures, f"{len(failures)} of {renderers} refused: {failures[0]!r}"


async def test_renderers_that_never_speak_are_told_why_they_are_dropped(nats_url: str) -> None:
    """A renderer answered with its subject that sends nothing costs the replica no
    endpoint, and is dropped with a Goodbye of its own (numbered as its first
    message, so a real renderer would read it): the oldest at the replica's bound,
    each as soon as it has been silent for ``handshake_timeout``, and all of them
    when the replica leaves the app."""
    goodbyes: dict[str, Any] = {}  # by the subject each was sent on
    counted = anyio.Event()
    expect = 0

    async def on_frame(msg: Any) -> None:
        assert msg.headers == {_nats.SEQ_HEADER: "1"}
        goodbyes[msg.subject] = _body_decoder.decode(msg.data)
        if len(goodbyes) >= expect:
            counted.set()

    with anyio.fail_after(30):
        async with running_main(max_pending_handshakes=2, handshake_timeout=1.0) as ipc_main:
            limit = WAITING_PER_PENDING * 2  # 32
            ipc_main.handle("ping", lambda event: "pong")
            replica = await ipc_main.join(nats_url, app="quiet")
            intruder = await nats.connect(nats_url)
            first, second = intruder.new_inbox(), intruder.new_inbox()
            for inbox in (first, second):
                await intruder.subscribe(f"{inbox}.frames.*", cb=on_frame)
                await intruder.subscribe(f"{inbox}.reply.*")

            # 40 silent ones: the 8 oldest are dropped at the bound.
            expect = 8
            asked = anyio.current_time()
            await ask_for_connections(intruder, "quiet", first, 40)
            await counted.wait()
            assert sorted(goodbyes) == sorted(f"{first}.frames.{i}" for i in range(8))
            for goodbye in goodbyes.values():
                assert goodbye.code is CloseCode.TOO_MANY_CONNECTIONS
                assert "had waited longest" in goodbye.reason
            assert len(replica._unheard) == limit
            assert len(ipc_main._links) == 0  # none of them has an endpoint

            # Silent past the timeout: each is dropped as its time comes.
            counted = anyio.Event()
            expect = 40
            await counted.wait()
            assert anyio.current_time() - asked >= 1.0
            for i in range(8, 40):
                goodbye = goodbyes[f"{first}.frames.{i}"]
                assert goodbye.code is CloseCode.PROTOCOL_ERROR
                assert "no handshake within 1.0 s" in goodbye.reason
            assert not replica._unheard
            await ask_for_connections(intruder, "quiet", second, 1)
            while not replica._unheard:  # noqa: ASYNC110 - no event reports it
                await anyio.sleep(0.01)

            async with ipcbus.connect(nats_url, app="quiet") as renderer:
                assert await renderer.invoke("ping") == "pong"

            # Leaving the app tells the last silent one too.
            counted = anyio.Event()
            expect = 41
            await replica.leave()
            await counted.wait()
            goodbye = goodbyes[f"{second}.frames.0"]
            assert goodbye.code is CloseCode.SHUTDOWN
            assert "leaving app 'quiet'" in goodbye.reason
            assert not replica._unheard
            await intruder.close()


async def test_a_flood_of_connect_requests_at_max_connections_logs_a_few_warnings(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With main full (max_connections), each connect request is refused at once: the
    refusals count as connections that ended before their handshake (a few a second
    at WARNING), not a line each."""
    caplog.set_level(logging.DEBUG, logger="ipcbus")
    requests = 500
    with anyio.fail_after(60):
        async with running_main(max_connections=1) as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            await ipc_main.join(nats_url, app="full")
            async with ipcbus.connect(nats_url, app="full") as renderer:
                assert await renderer.invoke("ping") == "pong"
                intruder = await nats.connect(nats_url)
                refused = anyio.Event()
                goodbyes = 0

                async def on_frame(msg: Any) -> None:
                    nonlocal goodbyes
                    goodbyes += 1  # the Goodbye refusing it
                    if goodbyes == requests:
                        refused.set()

                inbox = intruder.new_inbox()
                await intruder.subscribe(f"{inbox}.frames.*", cb=on_frame)
                await ask_for_connections(intruder, "full", inbox, requests)
                await refused.wait()
                await intruder.close()
                assert await renderer.invoke("ping") == "pong"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) <= 12, (len(warned), warned[:3])


async def ask_for_connections(nc: Any, app: str, inbox: str, n: int) -> None:
    """Publish ``n`` connect requests for ``app`` at once and complete none: replicas
    answer on ``inbox.reply.<i>`` and write frames to ``inbox.frames.<i>``."""
    for i in range(n):
        await nc.publish(
            connect_subject(app),
            msgspec.msgpack.encode(ConnectRequest(f"{inbox}.frames.{i}")),
            reply=f"{inbox}.reply.{i}",
        )
    await nc.flush()
