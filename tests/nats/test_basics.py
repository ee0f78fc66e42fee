"""One replica, one renderer: join, connect, invoke, over a real nats-server."""

from __future__ import annotations

import anyio

import ipcbus

from ..helpers import running_main

FAST = {"heartbeat_interval": 0.2}


async def test_a_renderer_joined_through_nats_invokes_a_replica(nats_url: str) -> None:
    with anyio.fail_after(20):
        async with running_main(**FAST) as ipc_main:
            ipc_main.handle("add", lambda event, a, b: a + b)
            replica = await ipc_main.join(nats_url, app="shop")
            assert replica.app == "shop"
            async with ipcbus.connect(nats_url, app="shop") as renderer:
                assert await renderer.invoke("add", 1, 2) == 3
                (contents,) = ipc_main.get_all_web_contents()
                assert contents.id == renderer.id
                assert contents.id > 2**20
