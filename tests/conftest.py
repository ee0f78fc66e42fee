from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

# Started as a background job without job control (``( cmd & )`` in a script),
# this process inherits SIGINT ignored, and so would every child it starts: the
# tests that interrupt a renderer (Ctrl-C) or stop a CLI with SIGINT would then
# fail. A handler, unlike SIG_IGN, is reset to the default in children.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _children() -> set[int]:
    """Live (non-zombie-reaped) child processes of this process, from /proc."""
    pids: set[int] = set()
    task_dir = Path(f"/proc/{os.getpid()}/task")
    if not task_dir.exists():
        return pids
    for task in task_dir.iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


@pytest.fixture(autouse=True)
def no_child_left_behind() -> Iterator[None]:
    """Every test must reap every process it started."""
    before = _children()
    yield
    leaked = _children() - before
    assert not leaked, f"test left child processes behind: {sorted(leaked)}"
