"""Two replica processes of one app, and six renderers joined through NATS.

Starts ``nats-server`` on a free loopback port if it is installed (or uses
``$NATS_URL``), then two ``replica.py`` processes, then six renderers here:
NATS's queue group gives each renderer one replica, which serves all it does;
a broadcast on one replica reaches every renderer of the app.

Run: ``python examples/scale_out/run.py`` (``pip install 'ipcbus[nats]'``;
Debian/Ubuntu: ``apt-get install nats-server``). See docs/scale-out.md.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio

import ipcbus

NEEDS = "nats-server"  # examples/run_all.py skips this example without it, outside CI

EXPECTED = """
renderer 1: add(1, 10) = 11, served by replica a or b: True
renderer 2: add(2, 10) = 12, served by replica a or b: True
renderer 3: add(3, 10) = 13, served by replica a or b: True
renderer 4: add(4, 10) = 14, served by replica a or b: True
renderer 5: add(5, 10) = 15, served by replica a or b: True
renderer 6: add(6, 10) = 16, served by replica a or b: True
renderer ids unique across the app: True
every renderer heard: 'sale at 10:00 (from replica X)' once
"""

HERE = Path(__file__).parent


def start_nats_server() -> tuple[subprocess.Popen[bytes] | None, str]:
    if url := os.environ.get("NATS_URL"):
        return None, url
    server = shutil.which("nats-server")
    if server is None:
        sys.exit("nats-server not found: install it (apt-get install nats-server) or set NATS_URL")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [server, "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(500):  # until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.01)
    return process, f"nats://127.0.0.1:{port}"


async def main(url: str) -> None:
    async with AsyncExitStack() as stack:
        for name in ("a", "b"):
            replica = await stack.enter_async_context(
                await anyio.open_process(
                    [sys.executable, str(HERE / "replica.py"), url, name], stderr=None
                )
            )
            assert replica.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await replica.stdout.receive(1)
            assert line == b"joined\n"
            assert replica.stdin is not None
            stack.push_async_callback(replica.stdin.aclose)  # the replica leaves the app

        heard: dict[int, list[str]] = {}
        everyone = anyio.Event()
        renderers = []
        for k in range(1, 7):
            renderer = ipcbus.IpcRenderer()

            @renderer.on("news")
            def news(event: ipcbus.IpcRendererEvent, text: str) -> None:
                heard.setdefault(event.sender.id, []).append(text)
                if len(heard) == 6:
                    everyone.set()

            await stack.enter_async_context(renderer.connect(url, app="shop"))
            where = await renderer.invoke("where")
            total = await renderer.invoke("add", k, 10)
            print(
                f"renderer {k}: add({k}, 10) = {total}, served by replica a or b: {where in 'ab'}"
            )
            renderers.append(renderer)
        print("renderer ids unique across the app:", len({r.id for r in renderers}) == 6)

        await renderers[0].send("announce", "sale at 10:00")
        with anyio.fail_after(10):
            await everyone.wait()
        await renderers[0].invoke("where")  # a round trip: a second copy would be here by now
        texts = {text[:-2] + "X)" for got in heard.values() for text in got}
        once = all(len(got) == 1 for got in heard.values()) and len(texts) == 1
        print(f"every renderer heard: {texts.pop()!r} once" if once else heard)


if __name__ == "__main__":
    server, nats_url = start_nats_server()
    try:
        anyio.run(main, nats_url)
    finally:
        if server is not None:
            server.kill()
            server.wait()
