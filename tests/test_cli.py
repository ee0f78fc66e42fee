"""The ``ipcbus`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anyio
import pytest

from .helpers import child_env, running_main


async def _run(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process(
        [sys.executable, "-m", "ipcbus", *argv], env=child_env(), check=False
    )


async def test_call_prints_the_json_result() -> None:
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            ipc_main.handle("add", lambda event, a, b: {"sum": a + b})
            listener = await ipc_main.listen()
            done = await _run(
                "call", listener.address, "add", "1", "2", f"--token={listener.token}"
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {"sum": 3}


async def test_call_reports_a_remote_error_and_exits_1() -> None:
    with anyio.fail_after(30):
        async with running_main() as ipc_main:
            listener = await ipc_main.listen()
            done = await _run("call", listener.address, "missing", f"--token={listener.token}")
            assert done.returncode == 1
            assert b"NoHandlerError: No handler registered for 'missing'" in done.stderr


async def test_call_rejects_bad_json() -> None:
    with anyio.fail_after(30):
        done = await _run("call", "unix:/nonexistent", "ch", "{not json")
        assert done.returncode == 2
        assert b"not valid JSON" in done.stderr


@pytest.mark.parametrize("entry", [["-m", "ipcbus"], ["-c", "from ipcbus.cli import main; main()"]])
async def test_demo_runs_end_to_end(entry: list[str]) -> None:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, *entry, "demo"], env=child_env(), check=False
        )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr
    for line in (
        "[renderer] send_sync returned 'pong'",
        "[renderer] asynchronous-reply: 'pong'",
        "[renderer] invoke add(1, 2) = 3",
        "[renderer] push from main: 'hello from main'",
        "main -> renderer invoke answered 'renderer 1'",
        "[main    ] renderer 1 gone: clean-exit",
    ):
        assert line in out, out


async def test_demo_finishes_when_nobody_reads_its_output() -> None:
    """``ipcbus demo | head -1``: once stdout is gone the demo must still finish.

    (A print that raised inside a listener left that call unanswered, and main
    and the renderer could wait for each other forever.)
    """
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout raises BrokenPipeError
    try:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-m", "ipcbus", "demo"],
                env=child_env(),
                stdout=write_end,
                stderr=write_end,
                check=False,
            )
    finally:
        os.close(write_end)
    assert done.returncode == 0


async def test_generated_tokens_are_safe_on_a_command_line() -> None:
    """A token starting with '-' would be read by argparse as an option."""
    with anyio.fail_after(10):
        async with running_main() as ipc_main:
            tokens = [(await ipc_main.listen()).token for _ in range(20)]
    assert all(t and not t.startswith("-") and t.isalnum() for t in tokens)
