"""Random and mutated byte streams for the fuzz tests, from a seeded generator.

A stream starts as a plausible renderer conversation (a Hello, then a few
frames of every type, mostly well formed) and is then mutated: bits flipped,
bytes inserted or deleted, slices duplicated, a length header replaced, the
end cut off, or the whole thing replaced by noise. The mutations mostly leave
the Hello alone, so most streams get past the handshake and exercise the
rules of an open connection.

``oracle`` runs a stream through the sans-I/O core on its own: what a live
main must do with the same bytes is exactly what the core decides.
"""

from __future__ import annotations

import os
import random
from typing import Any

import msgspec

from ipcbus._events import ConnectionTerminated, Event
from ipcbus._protocol import Connection, Role
from ipcbus._wire import (
    PROTOCOL_VERSION,
    Cancel,
    CloseCode,
    Goodbye,
    Hello,
    Message,
    Ping,
    Pong,
    Reply,
    Request,
    RequestKind,
    Welcome,
)

from ._raw import ENCODER, frames

CHANNELS = ("echo", "add", "note", "sync", "nope", "")
VALUES: tuple[Any, ...] = (
    0,
    -1,
    2**63 - 1,
    1.5,
    "x",
    "é" * 3,
    b"\x00\xff",
    None,
    True,
    [1, [2]],
    {"k": 1},
)


def _args(rng: random.Random) -> msgspec.Raw:
    return msgspec.Raw(ENCODER.encode([rng.choice(VALUES) for _ in range(rng.randrange(4))]))


def _hello(rng: random.Random, token: str) -> bytes:
    roll = rng.random()
    if roll < 0.9:
        return frames(Hello(PROTOCOL_VERSION, token, os.getpid()))
    if roll < 0.95:
        return frames(Hello(PROTOCOL_VERSION, token[: rng.randrange(len(token))], 1))
    return frames(Hello(rng.randrange(100), token, 1))


def _body(rng: random.Random, next_id: list[int]) -> object:
    roll = rng.random()
    if roll < 0.35:
        next_id[0] += rng.choice((1, 1, 1, 0, 2))  # sometimes a reused id, sometimes a gap
        kind = rng.choice((RequestKind.INVOKE, RequestKind.INVOKE, RequestKind.SYNC))
        return Request(next_id[0], kind, rng.choice(CHANNELS), _args(rng))
    if roll < 0.55:
        return Message(rng.choice(CHANNELS), _args(rng))
    if roll < 0.65:
        return Ping(rng.randrange(2**32))
    if roll < 0.72:
        return Pong(rng.randrange(2**32))
    if roll < 0.8:
        return Cancel(rng.randrange(next_id[0] + 2))
    if roll < 0.86:
        return Reply(rng.randrange(5), rng.random() < 0.5, _args(rng))
    if roll < 0.92:
        return Goodbye(rng.choice(list(CloseCode)), "bye")
    if roll < 0.96:
        return Welcome(PROTOCOL_VERSION, 1)
    return Hello(PROTOCOL_VERSION, "t", 1)


def _mutate(rng: random.Random, data: bytearray, start: int) -> None:
    """One mutation of ``data`` at or after ``start``."""
    if len(data) <= start:
        data += rng.randbytes(rng.randrange(1, 16))
        return
    at = rng.randrange(start, len(data))
    roll = rng.random()
    if roll < 0.3:
        data[at] ^= 1 << rng.randrange(8)
    elif roll < 0.45:
        data[at:at] = rng.randbytes(rng.randrange(1, 8))
    elif roll < 0.6:
        del data[at : at + rng.randrange(1, 8)]
    elif roll < 0.7:
        end = min(len(data), at + rng.randrange(1, 32))
        data[end:end] = data[at:end]
    elif roll < 0.8:
        data[at : at + 4] = rng.choice(
            (b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00", b"\x7f\x00\x00\x00")
        )
    elif roll < 0.9:
        del data[at:]
    else:
        data[at] = rng.randrange(256)


def make_stream(rng: random.Random, token: str, to: Role = Role.MAIN) -> bytes:
    """One fuzz stream: a conversation, usually mutated a little, sometimes pure noise.

    ``to`` is the side that reads it: main gets a Hello first, a renderer a Welcome.
    """
    if rng.random() < 0.05:
        return rng.randbytes(rng.randrange(64))
    if to is Role.MAIN:
        hello = _hello(rng, token)
    else:
        hello = frames(Welcome(PROTOCOL_VERSION if rng.random() < 0.95 else 2, 7))
    data = bytearray(hello)
    next_id = [0]
    for _ in range(rng.randrange(8)):
        data += frames(_body(rng, next_id))
    if rng.random() < 0.85:
        start = len(hello) if rng.random() < 0.8 else 0
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            _mutate(rng, data, start)
    return bytes(data)


def oracle(stream: bytes, token: str, max_frame_size: int) -> tuple[list[Event], bytes]:
    """What main's core does with ``stream`` then EOF: its events and its own output."""
    conn = Connection(Role.MAIN, token=token, renderer_id=1, max_frame_size=max_frame_size)
    conn.receive_data(stream)
    conn.receive_eof()
    return conn.events_received(), bytes(conn.data_to_send())


def closing_code(events: list[Event]) -> CloseCode | None:
    """The Goodbye code main sends for this stream; ``None`` if it sends none."""
    last = events[-1]
    assert isinstance(last, ConnectionTerminated)
    return None if last.remote else last.code
