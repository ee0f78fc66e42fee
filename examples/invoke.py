"""``handle`` / ``invoke``: results, typed arguments, and a ``RemoteError``.

Main serves a few channels; the spawned renderer (this file, ``--renderer``)
calls them. Annotated parameters get their arguments converted and validated
by msgspec; unannotated ones get the msgpack form (a ``date`` as a ``str``, a
Struct or dataclass as a ``dict``).

Run: ``python examples/invoke.py``
"""

from __future__ import annotations

import datetime as dt
import enum
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
import msgspec

from ipcbus import IpcMain, IpcMainInvokeEvent, IpcRenderer, RemoteError

EXPECTED = """
[renderer] add(1, 2) = 3
[renderer] length(Point(x=3.0, y=4.0)) = 5.0
[renderer] weekday(date(2024, 1, 1)) = 'Monday'
[renderer] describe(*values), where main's parameter is not annotated:
[renderer]   main saw dict: {'x': 1.0, 'y': 2.0}
[renderer]   main saw str: '2024-01-01'
[renderer]   main saw str: '2024-01-01T12:00:00'
[renderer]   main saw datetime: datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
[renderer]   main saw list: [1, 2]
[renderer]   main saw list: [3]
[renderer]   main saw bytes: b'\\x00'
[renderer]   main saw str: 'red'
[renderer]   main saw str: '1.5'
[renderer] move(Move(who='bob', to=Point(x=1.0, y=1.0))) = 'bob moved to (1.0, 1.0)'
[renderer] RemoteError: Error invoking remote method 'divide': ValueError: cannot divide by zero
[renderer]   .channel='divide' .type_name='ValueError' .remote_message='cannot divide by zero'
[renderer]   traceback included: True
"""


class Point(msgspec.Struct):
    x: float
    y: float


class Color(enum.Enum):
    RED = "red"


@dataclass
class Move:
    who: str
    to: Point


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


async def main() -> None:
    ipc_main = IpcMain()

    @ipc_main.handle("add")
    async def add(event: IpcMainInvokeEvent, a: int, b: int) -> int:
        return a + b

    @ipc_main.handle("length")
    def length(event: IpcMainInvokeEvent, p: Point) -> float:  # plain functions work too
        return float((p.x**2 + p.y**2) ** 0.5)

    @ipc_main.handle("weekday")
    def weekday(event: IpcMainInvokeEvent, day: dt.date) -> str:
        return day.strftime("%A")  # a real date: the annotation converted the str back

    @ipc_main.handle("describe")
    def describe(event: IpcMainInvokeEvent, *values: Any) -> list[list[Any]]:
        # Not annotated (Any): every value arrives in its msgpack form.
        return [[type(v).__name__, v] for v in values]

    @ipc_main.handle("move")
    def move(event: IpcMainInvokeEvent, m: Move) -> str:
        return f"{m.who} moved to ({m.to.x}, {m.to.y})"

    @ipc_main.handle("divide")
    def divide(event: IpcMainInvokeEvent, a: float, b: float) -> float:
        if b == 0:
            raise ValueError("cannot divide by zero")
        return a / b

    async with ipc_main:
        contents = await ipc_main.spawn([sys.executable, __file__, "--renderer"])
        await contents.wait_closed()


async def renderer() -> None:
    ipc_renderer = IpcRenderer()
    async with ipc_renderer.connect():
        invoke = ipc_renderer.invoke
        say("renderer", f"add(1, 2) = {await invoke('add', 1, 2)}")
        say("renderer", f"length(Point(x=3.0, y=4.0)) = {await invoke('length', Point(3.0, 4.0))}")
        day = dt.date(2024, 1, 1)
        say("renderer", f"weekday(date(2024, 1, 1)) = {await invoke('weekday', day)!r}")

        naive = dt.datetime(2024, 1, 1, 12)
        aware = naive.replace(tzinfo=dt.UTC)
        values = (Point(1.0, 2.0), day, naive, aware, (1, 2), {3}, b"\0", Color.RED, Decimal("1.5"))
        seen = await invoke("describe", *values)
        say("renderer", "describe(*values), where main's parameter is not annotated:")
        for type_name, value in seen:
            say("renderer", f"  main saw {type_name}: {value!r}")

        moved = await invoke("move", Move("bob", Point(1.0, 1.0)))
        say("renderer", f"move(Move(who='bob', to=Point(x=1.0, y=1.0))) = {moved!r}")

        try:
            await invoke("divide", 1, 0)
        except RemoteError as exc:
            say("renderer", f"RemoteError: {exc}")
            say(
                "renderer",
                f"  .channel={exc.channel!r} .type_name={exc.type_name!r} "
                f".remote_message={exc.remote_message!r}",
            )
            tb = exc.remote_traceback or ""
            say("renderer", f"  traceback included: {'cannot divide by zero' in tb}")


if __name__ == "__main__":
    anyio.run(renderer if sys.argv[1:] == ["--renderer"] else main)
