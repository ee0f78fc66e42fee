"""What a peer allowed to publish on an app's subjects cannot do to its replicas.

Every renderer may publish connect requests (docs/scale-out.md, permissions):
these are a renderer, or anyone with its credentials, sending what an honest
one would not. The replica must keep serving the others.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

import anyio
import msgspec
import pytest

import ipcbus
import nats
from ipcbus import _nats, _natsclient
from ipcbus._nats import ConnectRequest, connect_subject
from ipcbus._natsreplica import MAX_INBOX

from ..helpers import running_main

FAST: dict[str, Any] = {"heartbeat_interval": 0.5}


def _warnings(caplog: pytest.LogCaptureFixture, part: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and part in r.getMessage()
    ]


async def test_an_inbox_among_ipcbus_subjects_is_refused(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A connect request naming the app's broadcast subject as its inbox would have
    the replica publish its frames there, and every replica relay them to all
    its renderers: it is not answered, and nothing is published there."""
    caplog.set_level(logging.DEBUG, logger="ipcbus")
    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            await ipc_main.join(nats_url, app="shop")
            async with ipcbus.connect(nats_url, app="shop") as renderer:
                intruder = await nats.connect(nats_url)
                leaked: list[Any] = []

                async def on_leak(msg: Any) -> None:
                    leaked.append(msg)

                await intruder.subscribe("ipcbus.shop.>", cb=on_leak)
                await intruder.flush()
                await _ask_with_then_without(
                    intruder, "ipcbus.shop.broadcast.evil", "ipcbus.other.replica.x.y"
                )
                await intruder.flush()
                await intruder.close()
                assert await renderer.invoke("ping") == "pong"
    assert [m.subject for m in leaked if "broadcast" in m.subject] == []
    assert len(_warnings(caplog, "is one of ipcbus's subjects")) == 2


async def test_a_flood_of_garbage_connect_requests_logs_a_few_warnings(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ipcbus")
    requests = 2_000
    with anyio.fail_after(60):
        async with running_main(**FAST) as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            await ipc_main.join(nats_url, app="junk")
            intruder = await nats.connect(nats_url)
            for _ in range(requests):
                await intruder.publish(connect_subject("junk"), b"\xc1", reply="x.y")
            # Taken in order (one replica): the answer to this one comes after them all.
            await intruder.request(
                connect_subject("junk"),
                msgspec.msgpack.encode(ConnectRequest(intruder.new_inbox())),
                timeout=30,
            )
            await intruder.close()
            async with ipcbus.connect(nats_url, app="junk") as renderer:
                assert await renderer.invoke("ping") == "pong"
    ignored = [r for r in caplog.records if "ignored a connect request" in r.getMessage()]
    assert len(ignored) == requests  # each one said, but most at DEBUG
    assert len([r for r in ignored if r.levelno >= logging.WARNING]) <= 20


async def test_a_replica_whose_nats_reader_died_reconnects(
    nats_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-py's reader ends on a reply subject that does not decode (it logs, and
    the client still says it is connected): the replica's watch finds no PONG
    coming and reconnects, and renderers get in again."""
    caplog.set_level(logging.DEBUG, logger="ipcbus")
    monkeypatch.setattr(_natsclient, "WATCH_EVERY", 0.2)
    monkeypatch.setattr(_natsclient, "WATCH_WAIT", 0.5)
    where = urlparse(nats_url)
    assert where.hostname is not None and where.port is not None
    reconnected = anyio.Event()

    async def on_reconnected() -> None:
        reconnected.set()

    with anyio.fail_after(60):
        async with running_main(**FAST) as ipc_main:
            ipc_main.handle("ping", lambda event: "pong")
            await ipc_main.join(nats_url, app="deaf", reconnected_cb=on_reconnected)
            async with ipcbus.connect(nats_url, app="deaf") as renderer:
                assert await renderer.invoke("ping") == "pong"
            # A raw client: nats-py itself will not publish such a reply subject.
            async with await anyio.connect_tcp(where.hostname, where.port) as raw:
                await raw.receive()  # the server's INFO
                await raw.send(
                    b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                    b"PUB ipcbus.deaf.connect _INBOX.\xff 1\r\nx\r\nPING\r\n"
                )
                while b"PONG" not in await raw.receive():
                    pass  # the server has passed it on
            try:  # a nats-py that survives such a message leaves nothing to recover from
                async with ipcbus.connect(nats_url, app="deaf", timeout=2) as renderer:
                    assert await renderer.invoke("ping") == "pong"
            except ipcbus.ConnectionClosedError:
                await reconnected.wait()  # the watch found the replica deaf
                async with ipcbus.connect(nats_url, app="deaf") as renderer:
                    assert await renderer.invoke("ping") == "pong"
    if reconnected.is_set():
        assert _warnings(caplog, "no answer to a ping within 0.5 s")


async def test_a_connect_request_with_an_overlong_inbox_is_not_answered(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The replica keeps a renderer's inbox until it speaks: one longer than
    ``MAX_INBOX`` (a request can name one near the server's max_payload) is
    not taken."""
    caplog.set_level(logging.DEBUG, logger="ipcbus")
    with anyio.fail_after(30):
        async with running_main(**FAST) as ipc_main:
            replica = await ipc_main.join(nats_url, app="shop")
            intruder = await nats.connect(nats_url)
            await _ask_with_then_without(intruder, intruder.new_inbox() + "." + "x" * MAX_INBOX)
            assert len(replica._unheard) == 1  # the good one only
            await intruder.close()
    assert len(_warnings(caplog, "without a usable inbox")) == 1


async def _ask_with_then_without(intruder: Any, *bad_inboxes: str) -> None:
    """Ask app "shop" for connections with ``bad_inboxes``, then with a good one,
    and return once the good one is answered: one replica takes requests in order,
    so the bad ones before it have been dealt with."""
    for inbox in bad_inboxes:
        await intruder.publish(
            connect_subject("shop"),
            msgspec.msgpack.encode(ConnectRequest(inbox)),
            reply=intruder.new_inbox(),
        )
    answer = await intruder.request(
        connect_subject("shop"),
        msgspec.msgpack.encode(ConnectRequest(intruder.new_inbox())),
        timeout=10,
    )
    assert msgspec.msgpack.decode(answer.data, type=_nats.ConnectReply).subject
