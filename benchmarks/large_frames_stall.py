"""How long one large frame from one renderer holds main's loop for everyone else.

Main listens on a unix socket and serves ``ping`` (returns at once) and
``echo`` (returns its argument). A healthy renderer (its own process) calls
``ping`` back to back the whole time. An attacker (another process) then
sends, one scenario at a time:

* ``ports-170k``, ``ports-1.1m``: one ``Message`` frame of that size carrying
  port references (ends of channels the attacker "created"), on a channel
  nobody listens to, so main must close every one of them;
* ``ports-1.1m-by-64``: as many references, 64 to a frame (the most a frame
  may carry since the limit), all written at once;
* ``nil-57m``: ``invoke("echo", [None] * 57 Mi)`` (a 57 MiB array of nils);
* ``bytes-57m``: ``invoke("echo", b"x" * 57 MiB)``;
* ``nil-57m-guarded``: the nils again, to a channel whose guard refuses
  arguments over 1 MiB (``event.args_size``), so they are never decoded.

For each it prints the worst lateness of main's own loop (a task that sleeps
2 ms and records how late it wakes) and the slowest ``ping`` round trip the
healthy renderer saw while the attacker's frame was handled, both in ms, and
how long the attacker waited for its answer.

    python benchmarks/large_frames_stall.py [--only ports-170k,nil-57m]

To measure another checkout, put its ``src`` first:
``PYTHONPATH=/path/to/checkout/src python benchmarks/large_frames_stall.py``.
The healthy renderer and the attacker inherit that path.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import anyio
import msgspec

MiB = 1024 * 1024
SCENARIOS = {
    "ports-170k": ("ports", 170 * 1024),
    "ports-1.1m": ("ports", int(1.1 * MiB)),
    "ports-1.1m-by-64": ("ports64", int(1.1 * MiB)),
    "nil-57m": ("nil", 57 * MiB),
    "bytes-57m": ("bytes", 57 * MiB),
    "nil-57m-guarded": ("nil-guarded", 57 * MiB),
}


# ---- the healthy renderer (a child process) ---------------------------------


async def healthy(address: str, token: str) -> None:
    """Ping main back to back; on each stdin line print the slowest ping since the last."""
    import ipcbus

    worst = 0.0

    async def pinger(renderer: ipcbus.IpcRenderer) -> None:
        nonlocal worst
        while True:
            start = time.perf_counter()
            await renderer.invoke("ping")
            worst = max(worst, time.perf_counter() - start)

    async with ipcbus.connect(address, token=token) as renderer, anyio.create_task_group() as tg:
        tg.start_soon(pinger, renderer)
        stdin = anyio.wrap_file(sys.stdin)
        print("ready", flush=True)
        async for line in stdin:
            if line.strip() == "quit":
                break
            print(f"{worst * 1000:.1f}", flush=True)
            worst = 0.0
        tg.cancel_scope.cancel()


# ---- the attacker (a child process) -----------------------------------------


def port_frames(size: int, per_frame: int | None) -> tuple[bytes, int]:
    """``Message`` frames of about ``size`` bytes in all, carrying port refs.

    ``per_frame`` refs each (``None``: one frame, as many as fit).
    """
    from ipcbus._wire import Message, PortRef

    encoder = msgspec.msgpack.Encoder()
    per_ref = len(encoder.encode(PortRef(-100_001, -100_002, 0, 0)))  # 13 bytes each
    n = size // per_ref
    refs = [PortRef(-(100_001 + 2 * i), -(100_002 + 2 * i), 0, 0) for i in range(n)]
    out = bytearray()
    step = per_frame or n
    for i in range(0, n, step):
        body = encoder.encode(Message("nobody-listens", msgspec.Raw(b"\x90"), refs[i : i + step]))
        out += len(body).to_bytes(4, "big") + body
    return bytes(out), n


async def raw_ports(address: str, token: str, frame: bytes) -> None:
    """Hello, the frame, a ping request; read (and ignore) what main sends until its reply."""
    from ipcbus._framing import FrameDecoder, append_frame
    from ipcbus._wire import Body, Goodbye, Hello, Reply, Request, RequestKind

    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(Body)
    out = bytearray()
    append_frame(encoder, Hello(1, token, os.getpid()), out)
    out += frame
    append_frame(encoder, Request(1, RequestKind.INVOKE, "ping", msgspec.Raw(b"\x90")), out)
    frames = FrameDecoder(2**32)
    async with await anyio.connect_unix(address.removeprefix("unix:")) as stream:
        await stream.send(bytes(out))
        while True:
            while (raw := frames.next_body()) is not None:
                body = decoder.decode(raw)
                if isinstance(body, Reply):
                    return
                if isinstance(body, Goodbye):
                    print(f"main said Goodbye: {body.reason}", file=sys.stderr)
                    return
            try:
                frames.feed(await stream.receive())
            except anyio.EndOfStream:
                return


async def attack(address: str, token: str, kind: str, size: int) -> None:
    """Send one scenario's frame; exit once main has answered what follows it."""
    import ipcbus

    if kind.startswith("ports"):
        per_frame = int(kind[5:]) if kind[5:] else None
        frame, n = port_frames(size, per_frame)
        each = f" in frames of {per_frame}" if per_frame else ""
        print(f"sending {len(frame) / 1024:.0f} KiB, {n} port refs{each}", flush=True)
        await raw_ports(address, token, frame)
    elif kind == "nil-guarded":
        async with ipcbus.connect(address, token=token, timeout=60) as renderer:
            print(f"sending {size / MiB:.0f} MiB of nil, refused", flush=True)
            try:
                await renderer.invoke("limited", [None] * size, timeout=120)
            except ipcbus.RemoteError:
                pass
            else:
                raise AssertionError("the guard let it through")
    else:
        value = [None] * size if kind == "nil" else b"x" * size
        async with ipcbus.connect(address, token=token, timeout=60) as renderer:
            print(f"sending {size / MiB:.0f} MiB of {kind}", flush=True)
            reply = await renderer.invoke("echo", value, timeout=120)
            assert len(reply) == size


# ---- main (this process) -----------------------------------------------------


async def run(only: list[str]) -> None:
    import ipcbus

    print(f"ipcbus from {os.path.dirname(ipcbus.__file__)}")
    ipc_main = ipcbus.IpcMain()
    ipc_main.handle("ping", lambda event: None)
    ipc_main.handle("echo", lambda event, value: value)
    ipc_main.handle("limited", lambda event, value: value)
    if "nil-57m-guarded" in only:

        @ipc_main.add_guard
        def size_limit(event: Any) -> None:
            if event.channel == "limited" and event.args_size > MiB:
                raise ValueError(f"{event.args_size} bytes of arguments; 'limited' takes 1 MiB")

    lateness = 0.0

    async def monitor() -> None:
        nonlocal lateness
        while True:
            start = time.perf_counter()
            await anyio.sleep(0.002)
            lateness = max(lateness, time.perf_counter() - start - 0.002)

    async with ipc_main, anyio.create_task_group() as tg:
        listener = await ipc_main.listen()
        tg.start_soon(monitor)
        me = [sys.executable, __file__]
        async with await anyio.open_process(
            [*me, "--healthy", listener.address, listener.token], stderr=None
        ) as good:
            assert good.stdout is not None and good.stdin is not None
            lines = good.stdout

            async def line() -> str:
                data = b""
                while not data.endswith(b"\n"):
                    data += await lines.receive(1)
                return data.decode().strip()

            assert await line() == "ready"
            await anyio.sleep(0.5)
            for name in only:
                kind, size = SCENARIOS[name]
                await good.stdin.send(b"report\n")
                await line()  # reset the healthy renderer's worst
                lateness = 0.0
                start = time.perf_counter()
                result = await anyio.run_process(
                    [*me, "--attack", listener.address, listener.token, kind, str(size)],
                    stderr=None,
                )
                took = time.perf_counter() - start
                await good.stdin.send(b"report\n")
                worst_ping = await line()
                sent = result.stdout.decode().strip()
                print(
                    f"{name:<11} {sent:<36} main loop late up to {lateness * 1000:7.1f} ms; "
                    f"healthy ping up to {worst_ping:>7} ms; attacker done in {took:5.1f} s",
                    flush=True,
                )
            await good.stdin.send(b"quit\n")
        tg.cancel_scope.cancel()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--healthy":
        anyio.run(healthy, sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--attack":
        anyio.run(attack, sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    args = parser.parse_args()
    anyio.run(run, args.only.split(","))


if __name__ == "__main__":
    main()
