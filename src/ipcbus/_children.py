"""Renderers main starts as child processes: start one connected, stop it, reap it."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ._errors import ConnectionClosedError
from ._protocol import OPEN, State
from ._registry import channel_set
from ._transport import ENV_FD, ENV_TOKEN, child_socketpair, stream_from_socket
from ._wire import CloseCode

if TYPE_CHECKING:
    from ._serving import Link
    from ._webcontents import WebContents
    from .main import IpcMain

__all__ = ("reap", "spawn", "stop", "stop_lingering")


async def spawn(
    main: IpcMain,
    argv: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    allowed_channels: Iterable[str] | None,
) -> WebContents:
    """``IpcMain.spawn``: start ``argv`` with one end of a socket pair, serve the other."""
    tg = main._require_running("spawn")
    token = secrets.token_hex(32)
    ours, theirs = child_socketpair()
    child_env = dict(os.environ if env is None else env)
    child_env[ENV_FD] = str(theirs.fileno())
    child_env[ENV_TOKEN] = token
    try:
        process = await anyio.open_process(
            [os.fspath(a) for a in argv],
            stdin=None,
            stdout=None,
            stderr=None,
            env=child_env,
            cwd=cwd,
            pass_fds=[theirs.fileno()],
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        stream = await stream_from_socket(ours)
        link: Link = await tg.start(
            main._serve_started, stream, token, process, channel_set(allowed_channels)
        )
    except BaseException:
        ours.close()
        with anyio.CancelScope(shield=True):
            await stop(process)  # nothing serves it yet: it is ours to end
        raise
    try:
        with anyio.move_on_after(main.handshake_timeout):
            await link.wait_handshake()
    except BaseException:
        # Cancelled: end the half-made connection; finish (_serving) kills and reaps
        # the child, and we wait for that so that no process outlives us.
        with anyio.CancelScope(shield=True):
            if (endpoint := link.contents._endpoint) is not None:
                await endpoint.close(CloseCode.PROTOCOL_ERROR, "spawn was cancelled")
            await link.contents.wait_closed()
        raise
    endpoint = link.contents._endpoint
    if endpoint is None or endpoint.conn.state is not OPEN:
        if endpoint is not None and endpoint.conn.state is State.HANDSHAKE:
            await endpoint.close(CloseCode.PROTOCOL_ERROR, "no handshake in time")
        await link.contents.wait_closed()
        details = link.contents.disconnect_details
        raise ConnectionClosedError(
            f"renderer {argv!r} did not connect: {details.message if details else 'unknown'}"
            + (
                f" (exit code {details.exit_code})"
                if details and details.exit_code is not None
                else ""
            )
        )
    return link.contents


async def reap(main: IpcMain, process: anyio.abc.Process) -> int | None:
    """Wait for a child that lost its connection; terminate, then kill, if it lingers."""
    grace = main.shutdown_grace if main._closing else 2.0
    with anyio.move_on_after(grace):
        return await process.wait()
    if not main._closing:
        # Its connection is over but it keeps running: its business, until
        # main shuts down, which stops it (``stop_lingering``).
        main._lingering.add(process)
        return None
    with suppress(ProcessLookupError):
        process.terminate()
    with anyio.move_on_after(2):
        return await process.wait()
    with suppress(ProcessLookupError):
        process.kill()
    return await process.wait()


async def stop_lingering(main: IpcMain) -> None:
    """Shutdown: end the children whose connections ended while they kept running."""
    lingering, main._lingering = main._lingering, set()
    async with anyio.create_task_group() as tg:
        for process in lingering:
            if process.returncode is None:
                tg.start_soon(stop, process)
            else:
                tg.start_soon(process.wait)  # reap it


async def stop(process: anyio.abc.Process, grace: float = 0.0) -> int:
    """End a child: wait ``grace`` s, SIGTERM, 1 s more, SIGKILL; reap it; its exit code."""
    with anyio.move_on_after(grace):
        return await process.wait()
    with suppress(ProcessLookupError):
        process.terminate()
    with anyio.move_on_after(1.0):
        return await process.wait()
    with suppress(ProcessLookupError):
        process.kill()
    return await process.wait()
