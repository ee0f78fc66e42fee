"""Run every example and check its output against the ``EXPECTED`` string it declares.

Each ``examples/*.py`` (except this file) is a self-contained program with a
module-level ``EXPECTED = \"\"\"...\"\"\"`` holding the exact lines it prints to
stdout. An example that is a folder (``examples/web_page/``) has a
``main.py`` that does the same when run with ``--check``, and exits with
:data:`SKIP` when it cannot be checked here (no browser, outside CI).
This script runs each one with the current interpreter (60 s limit),
compares stdout line by line, prints a diff on a mismatch, and exits non-zero
if any example failed. ipcbus must be installed (``pip install -e .``).
An example made of several programs lives in a directory and is run as its
``run.py`` (``scale_out/run.py``). One that declares ``NEEDS = "nats-server"``
is skipped when that program is not installed, except in CI (``$CI`` set).

Run: ``python examples/run_all.py [NAME ...]``
"""

from __future__ import annotations

import ast
import difflib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIMEOUT = 60.0
SKIP = 77  # a folder example's "cannot check here"


def expected_lines(path: Path) -> list[str]:
    """The lines of the module-level ``EXPECTED`` string literal in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "EXPECTED" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value.strip("\n").splitlines()
    raise ValueError(f"{path.name} has no module-level EXPECTED = '''...''' string")


def needs(path: Path) -> str | None:
    """The program an example declares it needs (``NEEDS = "nats-server"``), if any."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "NEEDS" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def run_one(path: Path) -> str | None:
    """Run one example; ``None`` if it passed, ``"skip"``, else a description of the failure."""
    try:
        want = expected_lines(path)
    except (SyntaxError, ValueError) as exc:
        return str(exc)
    try:
        proc = subprocess.run(
            [sys.executable, str(path), *(["--check"] if path.name == "main.py" else [])],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return f"timed out after {TIMEOUT:.0f} s; stdout so far:\n{exc.stdout or ''}"
    if path.name == "main.py" and proc.returncode == SKIP:
        return "skip"
    got = [line.rstrip() for line in proc.stdout.strip("\n").splitlines()]
    problems = []
    if proc.returncode != 0:
        problems.append(f"exit code {proc.returncode} (expected 0)")
    if got != [line.rstrip() for line in want]:
        diff = difflib.unified_diff(want, got, "expected", "actual", lineterm="")
        problems.append("stdout differs from EXPECTED:\n" + "\n".join(diff))
    if problems and proc.stderr.strip():
        problems.append("stderr:\n" + proc.stderr.rstrip())
    return "\n".join(problems) or None


def argv_names(path: Path) -> set[str]:
    """What a command line may call an example: ``invoke``, ``invoke.py``, ``scale_out``."""
    if path.parent != HERE:
        return {path.parent.name, str(path.relative_to(HERE))}
    return {path.stem, path.name}


def main(argv: list[str]) -> int:
    try:
        import ipcbus  # noqa: F401
    except ImportError:
        print("ipcbus is not installed: run `pip install -e .` first", file=sys.stderr)
        return 2
    paths = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name)
    paths += sorted(HERE.glob("*/main.py"))  # a page and its main: web_page/
    paths += sorted(HERE.glob("*/run.py"))  # examples of several programs: scale_out/
    if argv:
        paths = [p for p in paths if argv_names(p) & set(argv)]
    failed = []
    for path in paths:
        if (tool := needs(path)) and not shutil.which(tool) and not os.environ.get("CI"):
            print(f"skip  {path.relative_to(HERE)} ({tool} is not installed)", flush=True)
            continue
        start = time.monotonic()
        problem = run_one(path)
        took = time.monotonic() - start
        name = str(path.relative_to(HERE))
        if problem == "skip":
            print(f"skip  {name} (cannot be checked here)", flush=True)
        elif problem is None:
            print(f"ok    {name} ({took:.1f} s)", flush=True)
        else:
            failed.append(name)
            print(f"FAIL  {name} ({took:.1f} s)\n{problem}\n", flush=True)
    if failed:
        print(f"{len(failed)} of {len(paths)} examples failed: {', '.join(failed)}")
        return 1
    print(f"{len(paths)} examples passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
