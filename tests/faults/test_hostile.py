"""Hostile or broken peers end only their own connection (issue 3, first bullet).

Each case opens a raw connection to a listening main, sends something wrong,
and checks: main says Goodbye with the right code and closes; the reason is
logged on ``ipcbus`` at WARNING; a peer that had completed the handshake is
reported to ``on_disconnect`` as ``"protocol-error"``; and the healthy
renderer beside it still gets answers.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

import ipcbus
from ipcbus._wire import (
    PROTOCOL_VERSION,
    Cancel,
    CloseCode,
    ErrorInfo,
    ErrorKind,
    Hello,
    Message,
    Reply,
    Request,
    RequestKind,
    Welcome,
)

from ..helpers import RENDERERS, child_env
from ._raw import (
    ENCODER,
    RawPeer,
    all_logged,
    bench,
    frames,
    raw_args,
    raw_frame,
    warnings_logged,
)

GARBAGE = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"  # a confused HTTP client


@dataclass(frozen=True)
class Fault:
    """What a peer sends (given the listener's token) and what main must answer."""

    name: str
    payload: Callable[[str], bytes]
    code: CloseCode
    logged: str  # part of the logged reason


BEFORE_HANDSHAKE = [
    Fault("http-garbage", lambda token: GARBAGE, CloseCode.FRAME_TOO_LARGE, "exceeds the limit"),
    Fault(
        "undecodable-body",
        lambda token: raw_frame(b"\xc1\xc1\xc1\xc1"),  # 0xc1 is never valid msgpack
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "length-over-limit",  # judged from the header: the body never comes
        lambda token: (2**31).to_bytes(4, "big") + b"x" * 16,
        CloseCode.FRAME_TOO_LARGE,
        "exceeds the limit",
    ),
    Fault(
        "large-frame-before-handshake",  # under max_frame_size, over the 64 KiB Hello limit
        lambda token: (100 * 1024).to_bytes(4, "big") + b"x" * 16,
        CloseCode.FRAME_TOO_LARGE,
        "exceeds the limit of 65536 bytes",
    ),
    Fault(
        "message-before-handshake",
        lambda token: frames(Message("add", raw_args(1, 2))),
        CloseCode.PROTOCOL_ERROR,
        "expected Hello",
    ),
    Fault(
        "request-before-handshake",
        lambda token: frames(Request(1, RequestKind.INVOKE, "add", raw_args(1, 2))),
        CloseCode.PROTOCOL_ERROR,
        "expected Hello",
    ),
    Fault(
        "wrong-token",
        lambda token: frames(Hello(PROTOCOL_VERSION, token + "x", os.getpid())),
        CloseCode.AUTHENTICATION_FAILED,
        "wrong token",
    ),
    Fault(
        "empty-token",
        lambda token: frames(Hello(PROTOCOL_VERSION, "", os.getpid())),
        CloseCode.AUTHENTICATION_FAILED,
        "wrong token",
    ),
    Fault(
        "hello-without-token",  # [tag, version]: the token field is missing
        lambda token: raw_frame(ENCODER.encode([1, PROTOCOL_VERSION])),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "wrong-version",
        lambda token: frames(Hello(PROTOCOL_VERSION + 98, token, os.getpid())),
        CloseCode.VERSION_MISMATCH,
        f"version {PROTOCOL_VERSION + 98}",
    ),
    Fault(
        "hello-shaped-like-a-map",
        lambda token: raw_frame(ENCODER.encode({"version": 1, "token": token})),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
]

AFTER_HANDSHAKE = [
    Fault("http-garbage", lambda token: GARBAGE, CloseCode.FRAME_TOO_LARGE, "exceeds the limit"),
    Fault(
        "undecodable-body",
        lambda token: raw_frame(b"\x94\xc1\xc1\xc1\xc1"),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "length-over-limit",
        lambda token: (2**31).to_bytes(4, "big") + b"x" * 16,
        CloseCode.FRAME_TOO_LARGE,
        "exceeds the limit",
    ),
    Fault(
        "valid-msgpack-wrong-shape-map",
        lambda token: raw_frame(ENCODER.encode({"channel": "add", "args": [1, 2]})),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "valid-msgpack-wrong-field-types",  # Request with a str id and no args
        lambda token: raw_frame(ENCODER.encode([4, "one", 1, "add"])),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "valid-msgpack-scalar",
        lambda token: raw_frame(ENCODER.encode(42)),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "unknown-frame-type",
        lambda token: raw_frame(ENCODER.encode([99, 1, 2, 3])),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "unknown-request-kind",
        lambda token: raw_frame(ENCODER.encode([4, 1, 9, "add", [1, 2]])),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "reply-to-id-never-asked",
        lambda token: frames(Reply(42, True, raw_args(1))),
        CloseCode.PROTOCOL_ERROR,
        "never sent",
    ),
    Fault(
        "cancel-of-id-never-sent",
        lambda token: frames(Cancel(42)),
        CloseCode.PROTOCOL_ERROR,
        "never sent",
    ),
    Fault(
        "duplicate-request-id",
        lambda token: frames(
            Request(1, RequestKind.INVOKE, "add", raw_args(1, 2)),
            Request(1, RequestKind.INVOKE, "add", raw_args(3, 4)),
        ),
        CloseCode.PROTOCOL_ERROR,
        "reused",
    ),
    Fault(
        "request-id-going-backwards",
        lambda token: frames(
            Request(5, RequestKind.INVOKE, "add", raw_args(1, 2)),
            Request(3, RequestKind.INVOKE, "add", raw_args(3, 4)),
        ),
        CloseCode.PROTOCOL_ERROR,
        "out of order",
    ),
    Fault(
        "second-hello",
        lambda token: frames(Hello(PROTOCOL_VERSION, token, os.getpid())),
        CloseCode.PROTOCOL_ERROR,
        "unexpected Hello",
    ),
    Fault(
        "arguments-nested-100k-deep",
        lambda token: frames(
            Request(1, RequestKind.INVOKE, "add", msgspec.Raw(b"\x91" * 100_000 + b"\xc0"))
        ),
        CloseCode.PROTOCOL_ERROR,
        "malformed frame",
    ),
    Fault(
        "welcome-from-a-renderer",
        lambda token: frames(Welcome(PROTOCOL_VERSION, 7)),
        CloseCode.PROTOCOL_ERROR,
        "unexpected Welcome",
    ),
]


@pytest.fixture(autouse=True)
def _capture_ipcbus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ipcbus")


@pytest.mark.parametrize("fault", BEFORE_HANDSHAKE, ids=lambda f: f.name)
async def test_fault_before_handshake_ends_only_that_connection(
    fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(10):
        async with bench(max_frame_size=1024 * 1024) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                await peer.send(fault.payload(setup.listener.token))
                goodbye = await peer.goodbye()  # no EOF from us: main ends it by itself
            assert goodbye.code is fault.code, goodbye
            assert fault.logged in goodbye.reason
            assert warnings_logged(caplog, fault.logged)
            assert setup.gone == {}  # never a renderer, so never disconnected
            await setup.check_healthy()


@pytest.mark.parametrize("fault", AFTER_HANDSHAKE, ids=lambda f: f.name)
async def test_fault_after_handshake_ends_only_that_connection(
    fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(10):
        async with bench(max_frame_size=1024 * 1024) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                welcome = await peer.handshake(setup.listener.token)
                assert setup.ipc_main.from_id(welcome.renderer_id) is not None
                await peer.send(fault.payload(setup.listener.token))
                goodbye = await peer.goodbye()
            assert goodbye.code is fault.code, goodbye
            assert fault.logged in goodbye.reason
            assert warnings_logged(caplog, fault.logged)
            details = await setup.disconnected(welcome.renderer_id)
            assert details.reason == "protocol-error", details
            assert fault.logged in details.message
            assert setup.ipc_main.from_id(welcome.renderer_id) is None
            await setup.check_healthy()


async def test_body_over_the_limit_is_refused_from_its_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Goodbye comes while the peer has sent 4 bytes: nothing waits for the body."""
    with anyio.fail_after(10):
        async with bench(max_frame_size=1024) as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                await peer.handshake(setup.listener.token)
                await peer.send((1025).to_bytes(4, "big"))
                goodbye = await peer.goodbye()
            assert goodbye.code is CloseCode.FRAME_TOO_LARGE
            assert "1025" in goodbye.reason and "1024" in goodbye.reason
            await setup.check_healthy()


async def test_truncated_frame_then_eof_after_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(10):
        async with bench() as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                welcome = await peer.handshake(setup.listener.token)
                whole = frames(Request(1, RequestKind.INVOKE, "add", raw_args(1, 2)))
                await peer.send(whole[: len(whole) - 3])
                await peer.send_eof()
                await peer.until_closed()
            details = await setup.disconnected(welcome.renderer_id)
            assert details.reason == "protocol-error", details
            assert warnings_logged(caplog, "middle of a frame")
            await setup.check_healthy()


async def test_truncated_frame_then_eof_before_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with anyio.fail_after(10):
        async with bench() as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                hello = frames(Hello(PROTOCOL_VERSION, setup.listener.token, os.getpid()))
                await peer.send(hello[:-5])
                await peer.send_eof()
                await peer.until_closed()
            assert all_logged(caplog, "middle of a frame")
            await setup.check_healthy()


async def test_many_hostile_peers_at_once_leave_main_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every fault above, all connected together, while the healthy renderer calls."""
    with anyio.fail_after(20):
        async with bench(max_frame_size=1024 * 1024) as setup:
            token = setup.listener.token

            async def attack(fault: Fault, handshake: bool) -> None:
                async with RawPeer.connect(setup.listener.address) as peer:
                    if handshake:
                        await peer.handshake(token)
                    await peer.send(fault.payload(token))
                    goodbye = await peer.goodbye()
                    assert goodbye.code is fault.code, (fault.name, goodbye)

            async with anyio.create_task_group() as tg:
                for fault in BEFORE_HANDSHAKE:
                    tg.start_soon(attack, fault, False)
                for fault in AFTER_HANDSHAKE:
                    tg.start_soon(attack, fault, True)
                for _ in range(20):
                    await setup.check_healthy()
            assert len(setup.gone) == len(AFTER_HANDSHAKE)
            assert {d.reason for d in setup.gone.values()} == {"protocol-error"}


async def test_arguments_that_are_not_utf8_fail_only_that_call() -> None:
    """A str inside the arguments that is not UTF-8: ValidationError, the link lives."""
    with anyio.fail_after(10):
        async with bench() as setup:
            setup.ipc_main.handle("echo", lambda event, *args: list(args))
            async with RawPeer.connect(setup.listener.address) as peer:
                await peer.handshake(setup.listener.token)
                broken = msgspec.Raw(b"\x91\xa3a\xff\x80")  # ["a\xff\x80"]
                await peer.send(frames(Request(1, RequestKind.INVOKE, "echo", broken)))
                reply = await peer.receive()
                assert isinstance(reply, Reply) and reply.request_id == 1 and not reply.ok
                info = msgspec.msgpack.decode(reply.value, type=ErrorInfo)
                assert info.kind is ErrorKind.VALIDATION, info
                # ipcbus's words first (which argument, what happened); msgspec's after
                assert info.message.startswith(
                    "Invalid arguments for 'echo': argument 0 could not be decoded"
                ), info.message
                await peer.send(frames(Request(2, RequestKind.INVOKE, "echo", raw_args(1))))
                reply = await peer.receive()
                assert isinstance(reply, Reply) and reply.ok
                assert msgspec.msgpack.decode(reply.value) == [1]
            await setup.check_healthy()


def _add(event: object, a: int, b: int) -> int:
    return a + b


def _rest(event: object, first: str, *rest: int) -> int:
    return len(rest)


def _untyped(event: Any, *args: Any) -> list[Any]:
    return list(args)


@pytest.mark.parametrize(
    ("handler", "args", "says"),
    [
        (_add, raw_args(1, "x"), "argument 1 (b: int) does not fit its annotation ("),
        (_rest, raw_args("a", 1, "x"), "argument 2 (*rest: int) does not fit its annotation ("),
        (_untyped, msgspec.Raw(b"\x92\x01\xa3a\xff\x80"), "argument 1 could not be decoded"),
        (_add, msgspec.Raw(b"\x92\x01\xa3a\xff\x80"), "argument 1 (b: int) does not fit"),
    ],
    ids=["typed", "variadic", "not-utf8", "not-utf8-typed"],
)
async def test_invalid_arguments_say_which_and_why_in_ipcbus_words_first(
    handler: Any, args: msgspec.Raw, says: str
) -> None:
    """The ValidationError names the argument and what went wrong before msgspec's detail."""
    with anyio.fail_after(10):
        async with bench() as setup:
            setup.ipc_main.handle("ch", handler)
            async with RawPeer.connect(setup.listener.address) as peer:
                await peer.handshake(setup.listener.token)
                await peer.send(frames(Request(1, RequestKind.INVOKE, "ch", args)))
                reply = await peer.receive()
                assert isinstance(reply, Reply) and reply.request_id == 1 and not reply.ok
                info = msgspec.msgpack.decode(reply.value, type=ErrorInfo)
                assert info.kind is ErrorKind.VALIDATION, info
                assert info.message.startswith("Invalid arguments for 'ch': "), info.message
                ours, _, _detail = info.message.partition(" (")
                assert says.split(" (")[0] in ours, info.message
                assert says in info.message, info.message
            await setup.check_healthy()


@pytest.mark.parametrize(
    ("args", "logged"),
    [
        (msgspec.Raw(b"\x05"), "not an argument list"),  # 5, not an array
        (msgspec.Raw(b"\x91\xa3a\xff\x80"), "argument 0 could not be decoded"),  # ["a\xff\x80"]
    ],
    ids=["not-a-list", "not-utf8"],
)
async def test_bad_arguments_for_plain_listeners_skip_only_that_message(
    args: msgspec.Raw, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A message plain listeners cannot take: logged, not delivered; the next one is."""
    got: list[tuple[str, tuple[object, ...]]] = []
    with anyio.fail_after(10):
        async with bench() as setup:
            setup.ipc_main.on("ch", lambda event, *a: got.append(("first", a)))
            setup.ipc_main.on("ch", lambda event, *a: got.append(("second", a)))
            setup.ipc_main.handle("done", lambda event: len(got))
            caplog.set_level(logging.DEBUG, logger="ipcbus")
            async with RawPeer.connect(setup.listener.address) as peer:
                await peer.handshake(setup.listener.token)
                await peer.send(
                    frames(
                        Message("ch", args),
                        Message("ch", raw_args(1)),
                        Request(1, RequestKind.INVOKE, "done", raw_args()),
                    )
                )
                reply = await peer.receive()
                assert isinstance(reply, Reply) and reply.ok
                assert msgspec.msgpack.decode(reply.value) == 2
            assert got == [("first", (1,)), ("second", (1,))]
            assert all_logged(caplog, "arguments do not fit")
            assert all_logged(caplog, logged)
            await setup.check_healthy()


async def test_reply_main_cannot_decode_fails_that_call_with_an_ipc_error() -> None:
    """A renderer answers main's invoke with a str that is not UTF-8."""
    with anyio.fail_after(10):
        async with bench() as setup:
            async with RawPeer.connect(setup.listener.address) as peer:
                contents = await peer.web_contents(setup.ipc_main, setup.listener.token)

                async def answer_badly() -> None:
                    request = await peer.receive()
                    assert isinstance(request, Request)
                    value = msgspec.Raw(b"\xa3a\xff\x80")
                    await peer.send(frames(Reply(request.request_id, True, value)))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(answer_badly)
                    with pytest.raises(ipcbus.IpcError):
                        await contents.invoke("anything")
            await setup.check_healthy()


# ---- the renderer's side of a version mismatch, and of a hostile main ----------


async def test_renderer_with_another_version_gets_a_clear_protocol_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A renderer speaking version 99 is refused; its error names both versions."""
    with anyio.fail_after(20):
        async with bench() as setup:
            env = child_env(
                IPCBUS_ADDRESS=setup.listener.address, IPCBUS_TOKEN=setup.listener.token
            )
            result = await anyio.run_process(
                [sys.executable, str(RENDERERS / "fault_version.py"), "99"],
                env=env,
                check=False,
            )
            out = result.stdout.decode()
            assert result.returncode == 0, (out, result.stderr.decode())
            assert out.startswith("ProtocolError:"), out
            assert "99" in out and f"version {PROTOCOL_VERSION}" in out, out
            assert warnings_logged(caplog, "version mismatch", "99")
            await setup.check_healthy()


async def test_main_with_another_version_gives_the_renderer_a_protocol_error(
    tmp_path: Path,
) -> None:
    """A fake main answers Welcome(version 99): connect raises, naming both versions."""
    with anyio.fail_after(10):
        path = tmp_path / "fake.sock"
        async with await anyio.create_unix_listener(path) as fake, anyio.create_task_group() as tg:

            async def fake_main() -> None:
                async with await fake.accept() as stream:
                    peer = RawPeer(stream)
                    hello = await peer.receive()
                    assert isinstance(hello, Hello)
                    await peer.send(frames(Welcome(PROTOCOL_VERSION + 98, 1)))
                    await peer.until_closed()

            tg.start_soon(fake_main)
            with pytest.raises(ipcbus.ProtocolError) as caught:
                async with ipcbus.connect(f"unix:{path}", token="t"):
                    pass
            message = str(caught.value)
            assert f"version {PROTOCOL_VERSION + 98}" in message
            assert f"version {PROTOCOL_VERSION}" in message


async def test_hostile_main_fails_the_renderers_pending_call(tmp_path: Path) -> None:
    """A fake main answers an invoke with garbage: the call fails at once, no hang."""
    with anyio.fail_after(10):
        path = tmp_path / "fake.sock"
        async with await anyio.create_unix_listener(path) as fake, anyio.create_task_group() as tg:

            async def fake_main() -> None:
                async with await fake.accept() as stream:
                    peer = RawPeer(stream)
                    assert isinstance(await peer.receive(), Hello)
                    await peer.send(frames(Welcome(PROTOCOL_VERSION, 1)))
                    assert isinstance(await peer.receive(), Request)
                    await peer.send(raw_frame(msgspec.msgpack.encode([5, "x"])))
                    await peer.until_closed()

            tg.start_soon(fake_main)
            async with ipcbus.connect(f"unix:{path}", token="t") as renderer:
                with pytest.raises(ipcbus.ConnectionClosedError, match="malformed"):
                    await renderer.invoke("anything")
                with pytest.raises(ipcbus.ConnectionClosedError):
                    await renderer.invoke("anything")


async def test_frames_a_listener_cannot_take_or_a_guard_refuses_do_not_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past its handshake a renderer can send, frame after frame, arguments a typed
    listener cannot take, the wrong number of them for a plain one, or calls a guard
    refuses: each used to log a line (an ERROR with a traceback for the plain
    listener), 20,000 lines for 200 KB sent. Now a few a second go out at WARNING
    (ERROR), the rest at DEBUG, counted, and the count is given when main ends."""
    caplog.set_level(logging.DEBUG, logger="ipcbus")
    n = 300

    def typed(event: ipcbus.IpcMainEvent, x: int) -> None: ...

    def plain(event, x):  # type: ignore[no-untyped-def]
        ...

    def guard(event: Any) -> None:
        if event.channel == "guarded":
            raise PermissionError("not for you")

    with anyio.fail_after(20):
        async with bench() as setup:
            setup.ipc_main.on("typed", typed)
            setup.ipc_main.on("plain", plain)
            setup.ipc_main.handle("guarded", lambda event: "never")
            setup.ipc_main.add_guard(guard)
            async with RawPeer.connect(setup.listener.address) as peer:
                await peer.handshake(setup.listener.token)
                await peer.send(
                    frames(
                        *(Message("typed", raw_args("not an int")) for _ in range(n)),
                        *(Message("plain", raw_args(1, 2, 3)) for _ in range(n)),
                        *(
                            Request(i, RequestKind.INVOKE, "guarded", raw_args())
                            for i in range(1, n + 1)
                        ),
                    )
                )
                for _ in range(n):  # each refused call is answered
                    reply = await peer.receive()
                    assert isinstance(reply, Reply) and not reply.ok
                await setup.check_healthy()
    loud = [r for r in caplog.records if r.name == "ipcbus" and r.levelno >= logging.WARNING]
    assert len(loud) < 100, len(loud)  # not 3 x 300
    held = [r.getMessage() for r in loud if "logged at DEBUG only" in r.getMessage()]
    assert any("listeners not called" in m for m in held), held
    assert any("listener errors" in m for m in held), held
    assert any("calls rejected by guards" in m for m in held), held
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len([r for r in debug if "not called" in r.getMessage()]) >= n - 20  # all counted


async def test_a_renderer_says_what_its_log_held_back_as_it_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same rates hold a renderer's own listener errors (main sending what they
    cannot take): a renderer process has no ``IpcMain`` to give the count when it
    ends, so leaving ``connect()`` gives it (here while main still runs)."""
    caplog.set_level(logging.DEBUG, logger="ipcbus")

    def broken(event: ipcbus.IpcRendererEvent, x: int) -> None:
        raise RuntimeError("listener bug")

    ipc_main = ipcbus.IpcMain()
    ipc_main.handle("ping", lambda event: "pong")
    with anyio.fail_after(20):
        async with ipc_main:
            async with ipc_main.connect_local() as renderer:
                renderer.on("tick", broken)
                contents = ipc_main.get_all_web_contents()[0]
                for i in range(200):
                    await contents.send("tick", i)
                # The reply comes after the ticks, on the same connection: by
                # then each was read and its listener called.
                assert await renderer.invoke("ping") == "pong"
                caplog.clear()
            held = [
                r.getMessage() for r in caplog.records if "logged at DEBUG only" in r.getMessage()
            ]
            assert any("listener errors" in m for m in held), held
