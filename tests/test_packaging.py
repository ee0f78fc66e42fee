"""What the distribution promises: the license pyproject.toml names is there.

The built sdist and wheel themselves are checked in CI (.ci/run builds them,
runs scripts/check_dist.py, installs the wheel alone in a fresh venv and runs
``ipcbus --version`` and ``ipcbus demo`` from it).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_license_pyproject_names_is_in_the_repository() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the ipcbus authors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_scripts_find_the_floor_of_each_runtime_dependency() -> None:
    """CI pins these in a second venv; each range must state its floor."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "floors.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pins = done.stdout.split()
    assert [pin.split("==")[0] for pin in pins] == ["anyio", "msgspec"]
    assert all(pin.split("==")[1][0].isdigit() for pin in pins)
