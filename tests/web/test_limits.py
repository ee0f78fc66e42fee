"""A page that floods or sends garbage gets a clear close and costs nobody else anything."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from wsproto.events import BytesMessage

from ipcbus._wire import CloseCode, Goodbye
from ipcbus.web import WebServer, _server

from ..helpers import LoopTurns, running_main, wait_for
from .helpers import own_origin, page
from .test_server import hello
from .wsclient import ClientFrames, open_websocket

LIMIT = 4096


async def _open_page(web: WebServer) -> ClientFrames:
    frames = await open_websocket("127.0.0.1", web.port, origin=own_origin(web))
    await frames.send_raw(hello(web.token))
    await frames.receive_frame()  # Welcome
    return frames


async def closed_with(frames: ClientFrames) -> tuple[Goodbye | None, int | None, str | None]:
    """The Goodbye the server sent last (if any) and its WebSocket close code and reason."""
    goodbye = None
    try:
        while True:
            body = await frames.receive_frame()
            if body[:2] == b"\x93\x07":
                goodbye = msgspec.msgpack.decode(body, type=Goodbye)
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        pass
    await frames.aclose()
    return goodbye, frames.close_code, frames.close_reason


@pytest.mark.parametrize("fragments", [1, 40])
async def test_an_oversized_message_closes_with_1009_and_main_serves_others(
    fragments: int,
) -> None:
    gone = anyio.Event()
    details: list[Any] = []
    async with running_main(max_frame_size=LIMIT) as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            async with page(web) as (healthy, _):
                flood = await _open_page(web)
                piece = b"x" * (2 * LIMIT // fragments + 1)
                for _ in range(fragments - 1):  # one message, never finished
                    await flood.send_raw(piece, finished=False)
                await flood.send_raw(piece, finished=fragments == 1)
                goodbye, code, reason = await closed_with(flood)
                await wait_for(gone)
                assert await healthy.invoke("ping") == "pong"
    assert goodbye is not None and goodbye.code is CloseCode.FRAME_TOO_LARGE
    assert code == 1009 and reason is not None and str(LIMIT) in reason
    assert details[0].reason == "protocol-error"


async def test_before_its_hello_a_page_cannot_make_main_buffer_more_than_64_kib() -> None:
    async with running_main() as ipc_main:  # max_frame_size: the 64 MiB default
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            frames = await open_websocket("127.0.0.1", web.port, origin=own_origin(web))
            for _ in range(17):  # 68 KiB of a first message that never ends
                await frames.send_raw(b"x" * 4096, finished=False)
            goodbye, code, _ = await closed_with(frames)
    assert goodbye is not None and goodbye.code is CloseCode.FRAME_TOO_LARGE
    assert code == 1009


async def test_a_message_within_the_limit_in_fragments_is_one_frame() -> None:
    async with running_main() as ipc_main:
        got = anyio.Event()
        received: list[bytes] = []
        ipc_main.on("blob", lambda event, data: (received.append(data), got.set()))
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            frames = await _open_page(web)
            body = msgspec.msgpack.encode([3, "blob", [b"y" * 100_000]])
            for start in range(0, len(body), 7000):
                chunk = body[start : start + 7000]
                await frames.send_raw(chunk, finished=start + 7000 >= len(body))
            await wait_for(got)
            await frames.aclose()
    assert received == [b"y" * 100_000]


@pytest.mark.parametrize(
    ("send", "code", "words"),
    [
        (b"\xc1", 1002, "malformed"),  # not msgpack
        (b"\x92\x63\x01", 1002, "malformed"),  # an unknown frame tag
        ("hello", 1003, "text"),  # a text message
    ],
)
async def test_garbage_is_a_protocol_error_for_that_page_only(
    send: bytes | str, code: int, words: str
) -> None:
    gone = anyio.Event()
    details: list[Any] = []
    async with running_main() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            async with page(web) as (healthy, _):
                bad = await _open_page(web)
                if isinstance(send, str):
                    from wsproto.events import TextMessage

                    await bad.stream.send(bad.ws.send(TextMessage(data=send)))
                else:
                    await bad.send_raw(send)
                _, close_code, reason = await closed_with(bad)
                await wait_for(gone)
                assert await healthy.invoke("ping") == "pong"
    assert close_code == code and reason is not None and words in reason
    assert details[0].reason == "protocol-error"
    assert words in details[0].message


async def test_broken_websocket_framing_is_a_protocol_error() -> None:
    gone = anyio.Event()
    details: list[Any] = []
    async with running_main() as ipc_main:
        ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            frames = await _open_page(web)
            # An unmasked frame from a client breaks RFC 6455 section 5.1.
            await frames.stream.send(b"\x82\x03abc")
            _, code, reason = await closed_with(frames)
            await wait_for(gone)
    assert code == 1002 and reason
    assert details[0].reason == "protocol-error"


async def test_a_page_that_never_says_hello_is_dropped() -> None:
    async with running_main(handshake_timeout=0.5) as ipc_main:
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            frames = await open_websocket("127.0.0.1", web.port, origin=own_origin(web))
            goodbye, code, _ = await closed_with(frames)
    assert goodbye is not None and goodbye.code is CloseCode.PROTOCOL_ERROR
    assert code == 1002


async def test_connections_held_open_cannot_lock_pages_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the limit of HTTP connections the one open longest is ended, not the
    newcomer: clients that keep connections alive cannot keep pages out."""
    monkeypatch.setattr(_server, "MAX_HTTP_CONNECTIONS", 4)
    async with running_main() as ipc_main:
        ipc_main.handle("ping", lambda event: "pong")
        web = await ipc_main.serve_web()
        with anyio.fail_after(20):
            held = []
            for _ in range(4):  # each served once, then kept alive
                stream = await anyio.connect_tcp("127.0.0.1", web.port)
                await stream.send(b"GET /ipcbus.d.ts HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await stream.receive()).startswith(b"HTTP/1.1 200")
                held.append(stream)
            async with page(web) as (renderer, _):  # its upgrade makes a fifth
                assert await renderer.invoke("ping") == "pong"
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                while await held[0].receive():  # the oldest was ended (after its body)
                    pass
            for stream in held:
                await stream.aclose()


async def test_pipelined_requests_give_the_loop_a_turn_between_them() -> None:
    """A client that pipelines requests (no token needed) is answered one request
    per turn of the loop, so it cannot hold the loop while thousands are served."""
    requests = 3000
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web()
        with anyio.fail_after(30):
            async with (
                await anyio.connect_tcp("127.0.0.1", web.port) as stream,
                LoopTurns() as loop,
            ):
                await stream.send(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n" * requests)
                received = b""
                while received.count(b"HTTP/1.1 404") < requests:
                    received += await stream.receive()
    assert loop.turns >= requests // 2, loop.turns


@pytest.mark.parametrize("said_hello", [False, True])
async def test_tiny_fragments_cost_a_page_more_than_their_payload(said_hello: bool) -> None:
    """A message that never ends, in empty (before the Hello) or 2-byte fragments:
    each fragment counts against the size limit beyond its payload, so fragments
    that carry nothing still end at the limit (closed with 1009), not only at the
    handshake timeout or the heartbeat."""
    limit = 65536
    async with running_main(max_frame_size=limit) as ipc_main:
        web = await ipc_main.serve_web()
        with anyio.fail_after(20):
            if said_hello:
                frames = await _open_page(web)
                payload = b"xy"
            else:
                frames = await open_websocket("127.0.0.1", web.port, origin=own_origin(web))
                payload = b""
            # 10,000 fragments: 20 KB of payload at most, under the limit itself
            fragments = [
                frames.ws.send(BytesMessage(data=payload, message_finished=False))
                for _ in range(10_000)
            ]
            await frames.stream.send(b"".join(fragments))
            goodbye, code, _ = await closed_with(frames)
    assert goodbye is not None and goodbye.code is CloseCode.FRAME_TOO_LARGE
    assert code == 1009


async def test_a_page_flooding_small_messages_gives_the_loop_turns() -> None:
    """Thousands of small messages in a few reads are taken a few hundred per turn of
    the loop, not all at once: a page cannot hold main's loop while they run."""
    messages = 20_000
    got = 0
    all_in = anyio.Event()

    def count(event: Any, n: int) -> None:
        nonlocal got
        got += 1
        if got == messages:
            all_in.set()

    async with running_main() as ipc_main:
        ipc_main.on("n", count)
        web = await ipc_main.serve_web()
        with anyio.fail_after(30):
            frames = await _open_page(web)
            one = frames.ws.send(BytesMessage(data=msgspec.msgpack.encode([3, "n", [1]])))
            async with LoopTurns() as loop:
                await frames.stream.send(one * messages)
                await all_in.wait()
            await frames.aclose()
    assert loop.turns >= messages // 512, loop.turns


async def test_a_path_is_looked_up_off_the_loop() -> None:
    """Resolving and stat-ing a requested path waits for the file system: a slow one
    must not hold main's loop, so it happens in a worker thread."""
    loop_thread = threading.current_thread()
    threads: list[threading.Thread] = []
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web()
        respond = web._site.respond

        def watched(method: str, target: bytes) -> Any:
            threads.append(threading.current_thread())
            return respond(method, target)

        web._site.respond = watched  # type: ignore[method-assign]
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", web.port) as stream:
                await stream.send(b"GET /ipcbus.d.ts HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await stream.receive()).startswith(b"HTTP/1.1 200")
    assert threads and loop_thread not in threads


def _blob_body(size: int) -> bytes:
    """A Message frame body on 'blob' of exactly ``size`` bytes."""
    n = size - 64
    while len(body := msgspec.msgpack.encode([3, "blob", [b"y" * n]])) != size:
        n += size - len(body)
    return body


@pytest.mark.parametrize("under", [0, 200])
async def test_a_message_in_one_frame_at_the_limit_is_taken_though_read_in_pieces(
    under: int,
) -> None:
    """``max_frame_size`` is the largest body main takes: a page's message of that
    size, in one WebSocket frame (as browsers send it), is delivered, though the
    server reads it 64 KiB at a time and wsproto hands each read over as a piece:
    only whole frames that do not end a message count more than their payload."""
    limit = 1 << 20
    received: list[int] = []
    got = anyio.Event()
    async with running_main(max_frame_size=limit) as ipc_main:
        ipc_main.on("blob", lambda event, data: (received.append(len(data)), got.set()))
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            frames = await _open_page(web)
            await frames.send_raw(_blob_body(limit - under))  # one frame, FIN set
            async with anyio.create_task_group() as tg:

                async def refused() -> None:
                    await frames.wait_closed()
                    tg.cancel_scope.cancel()  # the page was closed: no need to wait on

                tg.start_soon(refused)
                await got.wait()
                tg.cancel_scope.cancel()
            await frames.aclose()
    assert len(received) == 1
