"""Central checks: ``ipc_main.add_guard(fn)`` and channel allowlists.

Main allows a fixed set of channels (``IpcMain(allowed_channels=...)``) and
gives a "guest" renderer a narrower list (``spawn(..., allowed_channels=...)``).
A guard lets only the "admin" renderer reset the counter or leave notes. A
rejected call never reaches its handler, and its arguments are not even
decoded: the guest's ``reset("bogus")`` gets the guard's error, not the
validation error the extra argument would cause. A rejected ``send`` is
dropped (and logged, without its payload, on the ``ipcbus`` logger).

Each renderer (this file, ``--renderer NAME``) runs alone, in turn, and
prints what happened to each of its calls.

Run: ``python examples/guards.py``
"""

from __future__ import annotations

import sys

import anyio

from ipcbus import IpcError, IpcMain, IpcMainEvent, IpcMainInvokeEvent, IpcRenderer, RemoteError

EXPECTED = """
[admin   ] add(2) -> 2
[admin   ] reset() -> 0
[admin   ] shutdown() -> RemoteError, PermissionError:
[admin   ]     channel 'shutdown' is not allowed for renderer 1 (see allowed_channels)
[guest   ] add(5) -> 5
[guest   ] add('five') -> ValidationError:
[guest   ]     Invalid arguments for 'add': argument 0 (n: int) does not fit its \
annotation (Expected `int`, got `str` - at `$[0]`)
[guest   ] reset('bogus') -> RemoteError, PermissionError:
[guest   ]     only admin may reset
[guest   ] stats() -> RemoteError, PermissionError:
[guest   ]     channel 'stats' is not allowed for renderer 2 (see allowed_channels)
[main    ] the guard ran 7 times, the handlers 3 times; notes kept: ['from admin']
"""

ADMIN_ONLY = {"reset", "note"}


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain(allowed_channels=["add", "reset", "stats", "note"])  # not "shutdown"
    names: dict[int, str] = {}
    counter = 0
    runs = 0
    seen = 0
    notes: list[str] = []

    @ipc_main.add_guard
    def only_admin(event: IpcMainEvent | IpcMainInvokeEvent) -> None:
        nonlocal seen
        seen += 1
        if event.channel in ADMIN_ONLY and names.get(event.sender.id) != "admin":
            raise PermissionError(f"only admin may {event.channel}")

    @ipc_main.handle("add")
    def add(event: IpcMainInvokeEvent, n: int) -> int:
        nonlocal counter, runs
        runs += 1
        counter += n
        return counter

    @ipc_main.handle("reset")
    def reset(event: IpcMainInvokeEvent) -> int:
        nonlocal counter, runs
        runs += 1
        counter = 0
        return counter

    @ipc_main.handle("stats")
    def stats(event: IpcMainInvokeEvent) -> int:
        nonlocal runs
        runs += 1
        return counter

    @ipc_main.on("note")
    def note(event: IpcMainEvent, text: str) -> None:
        notes.append(text)

    async with ipc_main:
        for name, allowed in (("admin", None), ("guest", ["add", "reset", "note"])):
            contents = await ipc_main.spawn(
                [sys.executable, __file__, "--renderer", name], allowed_channels=allowed
            )
            names[contents.id] = name
            await contents.wait_closed()
    say("main", f"the guard ran {seen} times, the handlers {runs} times; notes kept: {notes}")


async def renderer(name: str) -> None:
    async def call(label: str, channel: str, *args: object) -> None:
        try:
            say(name, f"{label} -> {await r.invoke(channel, *args)}")
        except RemoteError as exc:  # the other side's exception, by name and message
            say(name, f"{label} -> RemoteError, {exc.type_name}:")
            say(name, f"    {exc.remote_message}")
        except IpcError as exc:
            say(name, f"{label} -> {type(exc).__name__}:")
            say(name, f"    {exc}")

    r = IpcRenderer()
    async with r.connect():
        if name == "admin":
            await call("add(2)", "add", 2)
            await call("reset()", "reset")
            await r.send("note", "from admin")
            await call("shutdown()", "shutdown")  # not in main's allowlist
        else:
            await call("add(5)", "add", 5)
            await call("add('five')", "add", "five")  # passes the guard, fails validation
            await call("reset('bogus')", "reset", "bogus")  # the guard says no first
            await r.send("note", "from guest")  # dropped by the guard
            await call("stats()", "stats")  # not in the guest's allowlist


if __name__ == "__main__":
    if sys.argv[1:2] == ["--renderer"]:
        anyio.run(renderer, sys.argv[2])
    else:
        anyio.run(main)
