"""Shared test helpers: a running IpcMain, renderer child scripts, bounded waits."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

import ipcbus

RENDERERS = Path(__file__).parent / "renderers"
SRC = Path(__file__).resolve().parent.parent / "src"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a renderer child: finds this checkout's ipcbus first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@asynccontextmanager
async def running_main(**options: Any) -> AsyncIterator[ipcbus.IpcMain]:
    """An ``IpcMain`` inside ``async with``, with a short shutdown grace."""
    options.setdefault("shutdown_grace", 2.0)
    async with ipcbus.IpcMain(**options) as ipc_main:
        yield ipc_main


async def spawn_script(
    ipc_main: ipcbus.IpcMain, tmp_path: Path, source: str, *args: str
) -> ipcbus.WebContents:
    """Write ``source`` (dedented) to a file and spawn it as a renderer."""
    script = tmp_path / f"renderer_{os.urandom(4).hex()}.py"
    script.write_text(textwrap.dedent(source))
    return await ipc_main.spawn([sys.executable, str(script), *args], env=child_env())


async def spawn_renderer(ipc_main: ipcbus.IpcMain, name: str, *args: str) -> ipcbus.WebContents:
    """Spawn ``tests/renderers/<name>.py`` as a renderer."""
    return await ipc_main.spawn(
        [sys.executable, str(RENDERERS / f"{name}.py"), *args], env=child_env()
    )


async def wait_for(event: anyio.Event, timeout: float = 5.0) -> None:
    """Wait for ``event``; fail the test (not hang) after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        await event.wait()
