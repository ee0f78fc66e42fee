"""Main's receive path for one-way sends, without the socket: parse + dispatch only.

    python benchmarks/dispatch_path.py                  # ns per message, by read size
    python benchmarks/dispatch_path.py --opcodes        # bytecodes per message, by function
    python benchmarks/dispatch_path.py --untyped        # the listener without annotations

Connects one renderer to an ``IpcMain`` (a real socket, so the endpoint is
the real one), then feeds main's ``Connection`` a prepared stream of
``send("sink", i)`` frames in reads of a given size and dispatches each read
as the endpoint's reader would (``Dispatcher.dispatch_batch``), timing that alone. The
read size matters: a long read holds thousands of frames at once (see
PROFILE.md, "the cycle collector"). ``--opcodes`` traces the same path with
``sys.settrace`` and counts the bytecodes each function runs per message (and
those of one ``send`` on the renderer's side): a count the machine's load
does not move.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from types import FrameType
from typing import Any

import anyio
import msgspec

from ipcbus import IpcMain, IpcRenderer
from ipcbus._framing import append_frame
from ipcbus._wire import Message


def _frames(n: int) -> bytes:
    out = bytearray()
    encoder = msgspec.msgpack.Encoder()
    for i in range(n):
        append_frame(encoder, Message("sink", [i]), out)
    return bytes(out)


async def _main(args: argparse.Namespace) -> None:
    count = 0

    def sink(event: object, x: int) -> None:  # typed: its argument is validated
        nonlocal count
        count += 1

    def plain_sink(event, x):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1

    data = _frames(args.n)
    ipc_main = IpcMain()
    ipc_main.on("sink", plain_sink if args.untyped else sink)
    ipc_main.handle("ready", lambda event: None)
    async with ipc_main:
        listener = await ipc_main.listen()
        renderer = IpcRenderer()
        async with renderer.connect(listener.address, token=listener.token):
            await renderer.invoke("ready")  # main has taken the renderer in
            endpoint = ipc_main.get_all_web_contents()[0]._endpoint
            assert endpoint is not None
            conn = endpoint.conn
            dispatch_batch = endpoint.dispatcher.dispatch_batch

            def feed(read_size: int) -> None:
                for offset in range(0, len(data), read_size):
                    conn.receive_data(data[offset : offset + read_size])
                    dispatch_batch(conn.events_received())
                    while conn.more:  # a long read is parsed a batch at a time
                        conn.receive_more()
                        dispatch_batch(conn.events_received())

            if args.opcodes:
                feed(4096)  # warm the caches
                _count_opcodes(lambda: feed(4096), args.n, "main, per message received")
                n = 2000

                async def sends() -> None:
                    for i in range(n):
                        await renderer.send("sink", i)

                counts = _trace_async_start()
                await sends()
                _trace_report(counts, n, "renderer, per send")
                return
            for read_size in args.read_sizes:
                best = min(_timed(feed, read_size) for _ in range(args.repeat)) / args.n * 1e9
                print(f"read size {read_size:>7,} bytes: {best:6.0f} ns per message")
            if count != args.n * len(args.read_sizes) * args.repeat:
                raise SystemExit(f"the listener ran {count} times: a message was lost")


def _timed(feed: Any, read_size: int) -> float:
    start = time.perf_counter()
    feed(read_size)
    return time.perf_counter() - start


_counts: collections.Counter[tuple[str, str]] = collections.Counter()


def _tracer(frame: FrameType, event: str, arg: object) -> Any:
    frame.f_trace_opcodes = True
    if event == "opcode":
        code = frame.f_code
        _counts[(code.co_name, code.co_filename.rsplit("/", 1)[-1])] += 1
    return _tracer


def _trace_async_start() -> collections.Counter[tuple[str, str]]:
    _counts.clear()
    sys.settrace(_tracer)
    return _counts


def _count_opcodes(fn: Any, n: int, title: str) -> None:
    counts = _trace_async_start()
    fn()
    _trace_report(counts, n, title)


def _trace_report(counts: collections.Counter[tuple[str, str]], n: int, title: str) -> None:
    sys.settrace(None)
    print(f"{title}: {sum(counts.values()) / n:.1f} bytecodes")
    for (name, where), value in counts.most_common(8):
        if value / n >= 0.5:
            print(f"  {value / n:7.1f}  {name} ({where})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="messages per pass")
    parser.add_argument("--repeat", type=int, default=5, help="passes per read size (best)")
    parser.add_argument("--read-sizes", type=int, nargs="+", default=[4096, 16384, 65536, 262144])
    parser.add_argument("--opcodes", action="store_true", help="count bytecodes instead")
    parser.add_argument("--untyped", action="store_true", help="a listener without annotations")
    args = parser.parse_args()
    anyio.run(_main, args)


if __name__ == "__main__":
    main()
