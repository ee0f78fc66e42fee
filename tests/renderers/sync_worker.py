"""A renderer written with the blocking facade: listeners and handlers before connecting."""

from __future__ import annotations

import queue
import threading

import ipcbus
import ipcbus.sync

ipc = ipcbus.sync.IpcRenderer()
greetings: queue.Queue[object] = queue.Queue()
quit_asked = threading.Event()


@ipc.on("hello")  # main sends it from on_connect: it must not be lost
def on_hello(event: ipcbus.IpcRendererEvent, arg: object) -> None:
    greetings.put(arg)


ipc.on("quit", lambda event: quit_asked.set())


@ipc.handle("title")
def title(event: ipcbus.IpcRendererEvent, suffix: str) -> str:
    return f"sync window{suffix}"


@ipc.handle_once("once")
def once(event: ipcbus.IpcRendererEvent) -> str:
    return "only once"


@ipc.handle("boom")
def boom(event: ipcbus.IpcRendererEvent) -> None:
    raise ValueError("sync handler failed")


@ipc.handle("add-via-main")
def add_via_main(event: ipcbus.IpcRendererEvent, a: int, b: int) -> object:
    # A plain handler runs in a worker thread: it may call main back, blocking.
    return event.sender.invoke("add", a, b)


with ipc.connect():
    ipc.send("greeted", greetings.get(timeout=10))
    quit_asked.wait(30)
