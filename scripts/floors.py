"""Print ``name==version`` for the lowest version of each runtime dependency.

Reads ``[project] dependencies`` in pyproject.toml; each must be written
``name>=version`` (optionally with an upper bound after a comma), so that the
floor is stated and CI can test it (.ci/run installs these pins in a second
venv and runs the test suite against them).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def floors() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    pins = []
    for dependency in dependencies:
        spec = dependency.replace(" ", "")
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][A-Za-z0-9.]*)(,<[^;]*)?", spec)
        if match is None:
            sys.exit(f"pyproject.toml: cannot tell the floor of {dependency!r}; write name>=X")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


if __name__ == "__main__":
    print("\n".join(floors()))
