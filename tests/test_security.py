"""Security defaults (SPEC section 8): tokens, socket permissions, no spoofed ids, TLS rule."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec
import pytest

import ipcbus
from ipcbus import AuthenticationError, IpcMainEvent
from ipcbus._framing import FrameDecoder, append_frame
from ipcbus._wire import (
    PROTOCOL_VERSION,
    Body,
    CloseCode,
    Goodbye,
    Hello,
    Message,
    Request,
    RequestKind,
    Welcome,
)

from .helpers import child_env, running_main, wait_for

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(Body)


def _frames(*bodies: Any) -> bytes:
    out = bytearray()
    for body in bodies:
        append_frame(_encoder, body, out)
    return bytes(out)


def _args(*args: Any) -> msgspec.Raw:
    return msgspec.Raw(msgspec.msgpack.encode(list(args)))


async def _read_until_eof(stream: anyio.abc.ByteStream) -> list[Any]:
    decoder = FrameDecoder(1 << 20)
    bodies: list[Any] = []
    while True:
        try:
            data = await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return bodies
        decoder.feed(data)
        while (body := decoder.next_body()) is not None:
            bodies.append(_decoder.decode(body))


async def _mode(path: Path) -> int:
    return (await anyio.Path(path).stat()).st_mode


async def _exists(path: Path) -> bool:
    return await anyio.Path(path).exists()


def _unix_path(address: str) -> str:
    assert address.startswith("unix:")
    return address[len("unix:") :]


class Spy:
    """Listeners and handlers on the channels a raw client uses; none may run."""

    CHANNELS = ("x", "y", "send", "invoke", "secret")

    def __init__(self, ipc_main: ipcbus.IpcMain) -> None:
        self.calls: list[str] = []
        self.connected: list[int] = []
        for channel in self.CHANNELS:
            ipc_main.on(channel, self.listener)
            ipc_main.handle(channel, self.listener)
        ipc_main.on_connect(lambda contents: self.connected.append(contents.id))

    def listener(self, event: Any, *args: Any) -> str:
        self.calls.append(event.channel)
        return "served"


# ---- tokens ---------------------------------------------------------------------------


async def test_raw_client_with_bad_token_is_refused_before_any_dispatch() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            spy = Spy(ipc_main)
            listener = await ipc_main.listen()
            stream = await anyio.connect_unix(_unix_path(listener.address))
            async with stream:
                # Everything in one write: the messages are already buffered
                # behind the Hello when main reads it.
                await stream.send(
                    _frames(
                        Hello(PROTOCOL_VERSION, "not-the-token", os.getpid()),
                        Message("x", _args("payload")),
                        Request(1, RequestKind.INVOKE, "invoke", _args()),
                        Request(2, RequestKind.SYNC, "send", _args()),
                    )
                )
                bodies = await _read_until_eof(stream)
            assert len(bodies) == 1
            goodbye = bodies[0]
            assert isinstance(goodbye, Goodbye)
            assert goodbye.code is CloseCode.AUTHENTICATION_FAILED
            assert "token" in goodbye.reason
            # A real renderer connects afterwards: the refused one never got in.
            async with ipcbus.connect(listener.address, token=listener.token) as renderer:
                assert await renderer.invoke("secret") == "served"
                assert ipc_main.get_all_web_contents() == [ipc_main.from_id(renderer.id)]
            assert spy.calls == ["secret"]
            assert spy.connected == [renderer.id]


async def test_raw_client_with_right_token_is_welcomed_with_an_id_it_did_not_choose() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            got = anyio.Event()
            senders: list[int] = []

            def on_x(event: IpcMainEvent, *args: Any) -> None:
                senders.append(event.sender.id)
                got.set()

            ipc_main.on("x", on_x)
            # A Hello with an extra trailing "id" field: main must ignore or refuse it.
            hello = msgspec.msgpack.encode([1, PROTOCOL_VERSION, listener.token, 999, 999])
            frame = len(hello).to_bytes(4, "big") + hello
            stream = await anyio.connect_unix(_unix_path(listener.address))
            async with stream:
                await stream.send(frame)
                decoder = FrameDecoder(1 << 20)
                decoder.feed(await stream.receive())
                body = decoder.next_body()
                assert body is not None
                first = _decoder.decode(body)
                if isinstance(first, Welcome):
                    assert first.renderer_id != 999
                    assert first.renderer_id > 0
                    await stream.send(_frames(Message("x", _args())))
                    await wait_for(got)
                    assert senders == [first.renderer_id]
                    assert ipc_main.from_id(999) is None
                    # On a unix socket the kernel says who the peer is: the
                    # process id claimed in the Hello (999) is not believed.
                    contents = ipc_main.from_id(first.renderer_id)
                    assert contents is not None
                    assert contents.process_id == os.getpid()
                else:
                    assert isinstance(first, Goodbye)
            assert 999 not in [c.id for c in ipc_main.get_all_web_contents()]


async def test_a_refused_renderer_reports_it_once_by_its_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No WARNING on the renderer's side besides the AuthenticationError it raises
    (both printed, with no logging set up, said the same thing twice); main still
    logs the refusal once on its side."""
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            with pytest.raises(AuthenticationError):
                async with ipcbus.connect(listener.address, token="wrong"):
                    pass
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in warned if "connection to main" in m], warned
    assert len([m for m in warned if "wrong token" in m]) == 1, warned


async def test_connect_with_wrong_token_raises_authentication_error() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            spy = Spy(ipc_main)
            for address in (None, "tcp://127.0.0.1:0"):
                listener = await ipc_main.listen(address)
                with pytest.raises(AuthenticationError) as info:
                    async with ipcbus.connect(listener.address, token="wrong"):
                        pytest.fail("connected with a wrong token")
                assert "token" in str(info.value)
                with pytest.raises(AuthenticationError):
                    async with ipcbus.connect(listener.address, token=""):
                        pass
                listener.close()
            assert spy.calls == []
            assert spy.connected == []


async def test_child_with_wrong_token_in_environment_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "wrong_token.py"
    script.write_text(
        "import anyio, ipcbus\n"
        "async def main():\n"
        "    try:\n"
        "        async with ipcbus.connect() as renderer:\n"
        "            await renderer.send('x')\n"
        "    except ipcbus.AuthenticationError:\n"
        "        raise SystemExit(7)\n"
        "anyio.run(main)\n"
    )
    with anyio.fail_after(20):
        async with running_main() as ipc_main:
            spy = Spy(ipc_main)
            listener = await ipc_main.listen()
            env = child_env(IPCBUS_ADDRESS=listener.address, IPCBUS_TOKEN="guess")
            result = await anyio.run_process(
                [sys.executable, str(script)], env=env, check=False, stderr=None
            )
            assert result.returncode == 7
            assert spy.calls == []
            assert spy.connected == []


# ---- socket files -------------------------------------------------------------------------


async def test_default_listener_is_private_and_removed_by_close() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            assert len(listener.token) >= 32
            path = Path(_unix_path(listener.address))
            directory = path.parent
            assert stat.S_IMODE(await _mode(directory)) == 0o700
            assert stat.S_ISSOCK(await _mode(path))
            assert stat.S_IMODE(await _mode(path)) == 0o600
            other = await ipc_main.listen()
            assert other.token != listener.token
            assert other.address != listener.address
            listener.close()
            assert not await _exists(path)
            assert not await _exists(directory)
            # The other listener still serves.
            async with ipcbus.connect(other.address, token=other.token) as renderer:
                assert renderer.id > 0
            await other.aclose()
            assert not await _exists(Path(_unix_path(other.address)))


async def test_default_listener_is_removed_when_main_exits() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            path = Path(_unix_path(listener.address))
            assert await _exists(path)
        assert not await _exists(path)
        assert not await _exists(path.parent)


async def test_explicit_unix_path_is_0600_and_removed(tmp_path: Path) -> None:
    with anyio.fail_after(10):
        for address in (tmp_path / "a.sock", f"unix:{tmp_path / 'b.sock'}"):
            async with running_main() as ipc_main:
                listener = await ipc_main.listen(address)
                path = Path(_unix_path(listener.address))
                assert path.parent == tmp_path
                assert stat.S_IMODE(await _mode(path)) == 0o600
                async with ipcbus.connect(address, token=listener.token) as renderer:
                    assert renderer.id > 0
            assert not await _exists(path)


async def test_listener_with_explicit_token() -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen(token="s3cret-token")
            assert listener.token == "s3cret-token"
            async with ipcbus.connect(listener.address, token="s3cret-token") as renderer:
                assert renderer.id > 0
            with pytest.raises(AuthenticationError):
                async with ipcbus.connect(listener.address, token="s3cret-tokem"):
                    pass


# ---- TCP --------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "[::]"])
async def test_plain_tcp_to_non_loopback_host_is_refused(host: str) -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            with pytest.raises(ValueError, match="ssl_context") as info:
                await ipc_main.listen(f"tcp://{host}:0")
            assert "TLS" in str(info.value)
            with pytest.raises(ValueError, match="ssl_context"):
                async with ipcbus.connect(f"tcp://{host}:9", token="t"):
                    pass


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_plain_tcp_on_loopback_is_allowed(host: str) -> None:
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            listener = await ipc_main.listen(f"tcp://{host}:0")
            assert listener.address.startswith(f"tcp://{host}:")
            port = int(listener.address.rsplit(":", 1)[1])
            assert port > 0
            async with ipcbus.connect(listener.address, token=listener.token) as renderer:
                assert await renderer.invoke("ping") == "pong"
                contents = ipc_main.from_id(renderer.id)
                assert contents is not None
                assert contents.process_id == os.getpid()


async def test_renderer_started_with_no_address_says_what_to_do() -> None:
    env = child_env()
    for name in ("IPCBUS_ADDRESS", "IPCBUS_TOKEN", "IPCBUS_FD"):
        env.pop(name, None)
    code = (
        "import anyio, ipcbus\n"
        "async def main():\n"
        "    try:\n"
        "        async with ipcbus.connect():\n"
        "            pass\n"
        "    except ipcbus.ConnectionClosedError as exc:\n"
        "        print(exc)\n"
        "anyio.run(main)\n"
    )
    with anyio.fail_after(20):
        result = await anyio.run_process([sys.executable, "-c", code], env=env, check=True)
    message = result.stdout.decode()
    assert "IPCBUS_ADDRESS" in message
    assert "unix:" in message
