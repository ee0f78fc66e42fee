"""Payloads from 0 B to 3 MiB through send, send_sync and invoke, both directions."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import anyio
import pytest

from ipcbus import IpcMainEvent

from .helpers import running_main, spawn_renderer, wait_for

SIZES = [0, 1, 64 * 1024, 1024 * 1024, 3 * 1024 * 1024]
SIZE_IDS = ["0B", "1B", "64KiB", "1MiB", "3MiB"]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
async def test_blobs_between_main_and_a_child(size: int) -> None:
    seen: dict[str, tuple[int, str]] = {}
    child_digest: list[tuple[int, str]] = []
    got_digest = anyio.Event()

    def on_blob(event: IpcMainEvent, data: bytes) -> None:
        seen["send"] = (len(data), digest(data))

    def on_blob_sync(event: IpcMainEvent, data: bytes) -> None:
        seen["send_sync"] = (len(data), digest(data))
        event.return_value = data  # main -> renderer as a send_sync reply

    def on_blob_invoke(event: Any, data: bytes) -> bytes:
        seen["invoke"] = (len(data), digest(data))
        return data  # main -> renderer as an invoke result

    def on_digest(event: IpcMainEvent, length: int, hexdigest: str) -> None:
        child_digest.append((length, hexdigest))
        got_digest.set()

    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.on("blob", on_blob)
            ipc_main.on("blob-sync", on_blob_sync)
            ipc_main.handle("blob-invoke", on_blob_invoke)
            ipc_main.on("blob-digest", on_digest)
            contents = await spawn_renderer(ipc_main, "worker")

            # renderer -> main by send, send_sync and invoke; replies come back.
            sent, synced, invoked = await contents.invoke("blobs-to-main", size)
            assert seen == {
                "send": (size, sent),
                "send_sync": (size, sent),
                "invoke": (size, sent),
            }
            assert synced == sent
            assert invoked == sent

            # main -> renderer by send and invoke.
            data = os.urandom(size)
            await contents.send("blob", data)
            await wait_for(got_digest, 20)
            assert child_digest == [(size, digest(data))]
            echoed = await contents.invoke("blob-echo", data)
            assert type(echoed) is bytes
            assert len(echoed) == size
            assert digest(echoed) == digest(data)


async def test_large_blobs_in_process_all_call_kinds() -> None:
    received: list[str] = []
    done = anyio.Event()
    data = os.urandom(3 * 1024 * 1024)

    def listener(event: IpcMainEvent, blob: bytes) -> None:
        received.append(digest(blob))
        event.return_value = len(blob)
        if len(received) == 2:
            done.set()

    with anyio.fail_after(20):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.on("blob", listener)
            ipc_main.handle("blob", lambda event, blob: blob)
            await renderer.send("blob", data)
            assert await renderer.send_sync("blob", data) == len(data)
            await wait_for(done)
            assert received == [digest(data)] * 2
            assert digest(await renderer.invoke("blob", data)) == digest(data)


async def test_many_concurrent_large_invokes_from_several_tasks() -> None:
    blobs = [os.urandom(512 * 1024 + i) for i in range(8)]
    results: dict[int, str] = {}

    async def echo(event: Any, blob: bytes) -> bytes:
        await anyio.lowlevel.checkpoint()
        return blob

    with anyio.fail_after(20):
        async with running_main() as ipc_main, ipc_main.connect_local() as renderer:
            ipc_main.handle("echo", echo)

            async def call(i: int) -> None:
                results[i] = digest(await renderer.invoke("echo", blobs[i]))

            async with anyio.create_task_group() as tg:
                for i in range(len(blobs)):
                    tg.start_soon(call, i)
            assert results == {i: digest(b) for i, b in enumerate(blobs)}
