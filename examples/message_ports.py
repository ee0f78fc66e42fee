"""Message ports: ``MessageChannelMain``, ``post_message(..., transfer=[...])``, ``event.ports``.

Main spawns two renderers (this file, ``--renderer NAME``) and shows:

1. main <-> renderer: main keeps one end of a channel and gives the other to
   alice; what main posts before alice starts her end is queued, not lost.
2. renderer <-> renderer: main creates a channel and gives one end to each;
   alice and bob play ping-pong over it (through main, which routes port
   traffic), then alice closes her end and both ends see "close".
3. a port forwarded: bob creates a channel himself and hands one end to main,
   which forwards it to alice; they talk over bob's channel.
4. the rules: a transferred port is neutered, a bad transfer raises TypeError
   naming the index, a port sent where nobody listens is closed, and a
   renderer that exits closes every port it held.

Renderers report to main on the "log" channel; only main prints.

Run: ``python examples/message_ports.py``
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from ipcbus import (
    IpcMain,
    IpcMainEvent,
    IpcRenderer,
    IpcRendererEvent,
    MessageChannelMain,
    MessageEvent,
)

EXPECTED = """
[main    ] 1. main <-> renderer
[main    ] alice answered: 'alice got: hello (posted before she started)'
[main    ] 2. renderer <-> renderer, over a channel main created
[main    ] bob got ['ping', 1]
[main    ] alice got ['pong', 1]
[main    ] bob got ['ping', 2]
[main    ] alice got ['pong', 2]
[main    ] alice closes her end
[main    ] alice saw close
[main    ] bob saw close
[main    ] 3. a port bob created, forwarded by main to alice
[main    ] main forwards bob's port (ports in the message: 1)
[main    ] bob got 'hi bob, this is alice'
[main    ] 4. the rules
[main    ] posting on a transferred port: nothing happens
[main    ] transfer[1] is a duplicate of transfer[0]; list each port once ...
[main    ] transfer[0] was already transferred: a transferred port is neutered ...
[main    ] sent to a channel nobody listens on: main's end saw close
[main    ] alice exits: main's end of her channel saw close
"""


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain()
    logs_in, logs_out = anyio.create_memory_object_stream[str](100)
    ipc_main.on("log", lambda event, text: logs_in.send_nowait(text))

    async def show_logs(count: int) -> None:
        for _ in range(count):
            say("main", await logs_out.receive())

    async with ipc_main, logs_in, logs_out:
        alice = await ipc_main.spawn([sys.executable, __file__, "--renderer", "alice"])
        bob = await ipc_main.spawn([sys.executable, __file__, "--renderer", "bob"])

        say("main", "1. main <-> renderer")
        chat = MessageChannelMain()
        chat.port1.post_message("hello (posted before she started)")  # queued
        await alice.post_message("chat", None, [chat.port2])
        async for event in chat.port1:  # iterating starts main's end
            say("main", f"alice answered: {event.data!r}")
            break

        say("main", "2. renderer <-> renderer, over a channel main created")
        game = MessageChannelMain()
        await bob.post_message("game", "bob", [game.port2])
        await alice.post_message("game", "alice", [game.port1])
        await show_logs(5)
        # The two "close" reports come over two connections: print them sorted.
        for text in sorted([await logs_out.receive(), await logs_out.receive()]):
            say("main", text)

        say("main", "3. a port bob created, forwarded by main to alice")
        forwarded = anyio.Event()

        @ipc_main.on("bobs-port")
        async def forward(event: IpcMainEvent, _: Any) -> None:
            say("main", f"main forwards bob's port (ports in the message: {len(event.ports)})")
            await alice.post_message("bobs-port", None, event.ports)
            forwarded.set()

        await bob.send("make-a-channel")
        await forwarded.wait()
        await show_logs(1)

        say("main", "4. the rules")
        a, b = MessageChannelMain(), MessageChannelMain()
        await alice.post_message("keep", None, [a.port2])
        a.port2.post_message("lost")  # neutered: a silent no-op
        say("main", "posting on a transferred port: nothing happens")
        for transfer in ([b.port1, b.port1], [a.port2]):
            try:
                await alice.post_message("keep", None, transfer)
            except TypeError as exc:
                text = str(exc)
                say("main", text.split(" (")[0] + (" ..." if " (" in text else ""))
        await alice.post_message("nobody-listens-here", None, [b.port2])
        async for _ in b.port1:
            pass  # ends when the port closes
        say("main", "sent to a channel nobody listens on: main's end saw close")
        await alice.send("exit")
        async for _ in a.port1:
            pass
        say("main", "alice exits: main's end of her channel saw close")


async def renderer(name: str) -> None:
    r = IpcRenderer()
    done = anyio.Event()
    kept = []

    async def log(text: str) -> None:
        await r.send("log", text)

    @r.on("chat")
    async def chat(event: IpcRendererEvent, _: Any) -> None:
        port = event.ports[0]
        async for message in port:
            port.post_message(f"{name} got: {message.data}")
            break

    @r.on("game")
    async def game(event: IpcRendererEvent, me: str) -> None:
        port = event.ports[0]

        @port.on("message")
        async def on_message(message: MessageEvent) -> None:
            word, n = message.data
            await log(f"{me} got {message.data}")  # report before answering
            if word == "ping":
                port.post_message(["pong", n])
            elif n < 2:
                port.post_message(["ping", n + 1])
            else:
                await log("alice closes her end")
                port.close()

        @port.on("close")
        async def on_close() -> None:
            await log(f"{me} saw close")

        port.start()
        if me == "alice":
            port.post_message(["ping", 1])

    @r.on("make-a-channel")
    async def make_a_channel(event: IpcRendererEvent) -> None:
        mine = MessageChannelMain()
        await r.post_message("bobs-port", None, [mine.port2])
        async for message in mine.port1:
            await log(f"bob got {message.data!r}")
            break

    @r.on("bobs-port")
    def bobs_port(event: IpcRendererEvent, _: Any) -> None:
        event.ports[0].post_message("hi bob, this is alice")

    @r.on("keep")
    def keep(event: IpcRendererEvent, _: Any) -> None:
        kept.extend(event.ports)

    @r.on("exit")
    def exit_(event: IpcRendererEvent) -> None:
        done.set()

    async with r.connect():
        if name == "alice":
            await done.wait()  # alice leaves when told; her ports close with her
        else:
            await r.wait_closed()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--renderer"]:
        anyio.run(renderer, sys.argv[2])
    else:
        anyio.run(main)
