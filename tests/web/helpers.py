"""Helpers for the web tests: a Python renderer over a real WebSocket, raw HTTP requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

import ipcbus
from ipcbus.web import WebServer

from .wsclient import ClientFrames, open_websocket


def own_origin(web: WebServer) -> str:
    return f"http://{web.host}:{web.port}"


@asynccontextmanager
async def page(
    web: WebServer, *, origin: str | None = "own", token: str | None = None
) -> AsyncIterator[tuple[ipcbus.IpcRenderer, ClientFrames]]:
    """A Python ``IpcRenderer`` connected the way a page is: WebSocket to /ipcbus."""
    frames = await open_websocket(
        web.host, web.port, origin=own_origin(web) if origin == "own" else origin
    )
    renderer = ipcbus.IpcRenderer()
    async with renderer._connect_stream(frames, web.token if token is None else token):
        yield renderer, frames


async def http_get(port: int, target: str, method: str = "GET", extra: str = "") -> bytes:
    """One raw HTTP/1.1 request (the target sent exactly as given); the whole response."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
        await stream.send(f"{head}Connection: close\r\n\r\n".encode())
        response = b""
        try:
            while True:
                response += await stream.receive()
        except anyio.EndOfStream:
            pass
    return response


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header(response: bytes, name: str) -> str | None:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None
