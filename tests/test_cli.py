"""The ``ipcbus`` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import ipcbus
from ipcbus import cli

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


def _one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    """The single stderr line of a failed ``ipcbus call``; fails on a traceback."""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, done.stderr.decode()
    assert lines[0].startswith("ipcbus call: "), lines
    assert "Traceback" not in lines[0]
    return lines[0]


async def test_every_call_error_is_one_line_with_the_guides_exit_status(tmp_path: Path) -> None:
    """Errors print one line, no traceback, no warning besides; exit codes as in the guide."""

    async def slow(event: object) -> None:
        await anyio.sleep(30)

    def typed(event: object, n: int) -> int:
        return n

    def boom(event: object) -> None:
        raise ValueError("boom")

    with anyio.fail_after(60):
        async with running_main() as ipc_main:
            ipc_main.handle("slow", slow)
            ipc_main.handle("typed", typed)
            ipc_main.handle("boom", boom)
            listener = await ipc_main.listen()
            address, token = listener.address, f"--token={listener.token}"
            missing = tmp_path / "nobody.sock"
            cases = [
                # (argv, exit status, what the line says)
                ((f"unix:{missing}", "ch", token), 3, "cannot connect to main"),
                ((str(missing), "ch", token), 2, f"write 'unix:{missing}'"),
                (("nonsense", "ch", token), 2, "unsupported address 'nonsense'"),
                (("tcp://192.0.2.1:9", "ch", token), 2, "TLS"),
                ((address, "ch", "{not json", token), 2, "not valid JSON"),
                ((address, "", token), 2, "channel"),
                ((address, "missing", token), 1, "NoHandlerError: No handler registered"),
                ((address, "boom", token), 1, "RemoteError: Error invoking remote method 'boom'"),
                ((address, "typed", '"x"', token), 1, "ValidationError: Invalid arguments"),
                ((address, "slow", token, "--timeout=0.3"), 4, "IpcTimeoutError"),
                ((address, "typed", "1", "--token=wrong"), 3, "AuthenticationError"),
            ]
            for argv, status, says in cases:
                done = await _run("call", *argv)
                assert done.returncode == status, (argv, done.stderr)
                assert says in _one_line(done), (argv, done.stderr)
                assert done.stdout == b"", argv


@pytest.mark.parametrize("entry", ["module", "script"])
async def test_version(entry: str) -> None:
    script = Path(sys.executable).with_name("ipcbus")
    if entry == "script" and not script.exists():
        pytest.skip("the ipcbus console script is not installed next to this Python")
    argv = [sys.executable, "-m", "ipcbus"] if entry == "module" else [str(script)]
    with anyio.fail_after(30):
        done = await anyio.run_process([*argv, "--version"], env=child_env(), check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == f"ipcbus {ipcbus.__version__}"


def test_the_guide_lists_the_exit_statuses_the_command_uses() -> None:
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text()
    for name in ("EXIT_OK", "EXIT_CALL_FAILED", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_TIMEOUT"):
        status = getattr(cli, name)
        assert f"| {status} |" in guide, f"docs/guide.md does not list exit status {status}"


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
