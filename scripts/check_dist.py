"""Check the built sdist and wheel in DIST_DIR: python scripts/check_dist.py DIST_DIR.

Run by .ci/run after ``python -m build``. Fails (exit 1, one line per problem)
unless there is exactly one sdist and one wheel, of the version in
src/ipcbus/__init__.py, both carrying this repository's LICENSE, and the wheel
has the package, its py.typed marker, the ``ipcbus`` console script and the
MIT license expression in its metadata.
"""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _version() -> str:
    text = (ROOT / "src" / "ipcbus" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, flags=re.MULTILINE)
    assert match is not None, "no __version__ in src/ipcbus/__init__.py"
    return match[1]


def problems(dist: Path) -> list[str]:
    version = _version()
    if not (ROOT / "LICENSE").is_file():
        return ["no LICENSE in the repository (pyproject.toml names one)"]
    license_text = (ROOT / "LICENSE").read_bytes()
    found: list[str] = []
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if [w.name for w in wheels] != [f"ipcbus-{version}-py3-none-any.whl"]:
        found.append(f"expected one wheel ipcbus-{version}-py3-none-any.whl, got {wheels}")
    if [s.name for s in sdists] != [f"ipcbus-{version}.tar.gz"]:
        found.append(f"expected one sdist ipcbus-{version}.tar.gz, got {sdists}")
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            info = f"ipcbus-{version}.dist-info"
            licenses = [n for n in names if n.startswith(f"{info}/licenses/")]
            if [zf.read(n) for n in licenses] != [license_text]:
                found.append(f"{wheel.name}: LICENSE missing or different: {licenses}")
            for needed in ("ipcbus/__init__.py", "ipcbus/py.typed", "ipcbus/cli.py"):
                if needed not in names:
                    found.append(f"{wheel.name}: {needed} missing")
            metadata = zf.read(f"{info}/METADATA").decode()
            if "License-Expression: MIT" not in metadata.splitlines():
                found.append(f"{wheel.name}: METADATA has no 'License-Expression: MIT'")
            if "ipcbus = ipcbus.cli:main" not in zf.read(f"{info}/entry_points.txt").decode():
                found.append(f"{wheel.name}: no ipcbus console script")
            stray = sorted(n for n in names if not n.startswith(("ipcbus/", f"{info}/")))
            if stray:
                found.append(f"{wheel.name}: files outside the package: {stray[:5]}")
    for sdist in sdists:
        with tarfile.open(sdist) as tf:
            member = f"ipcbus-{version}/LICENSE"
            try:
                extracted = tf.extractfile(member)
            except KeyError:
                extracted = None
            if extracted is None or extracted.read() != license_text:
                found.append(f"{sdist.name}: {member} missing or different")
    return found


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    dist = Path(sys.argv[1])
    found = problems(dist)
    for problem in found:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not found:
        print(f"check_dist: {', '.join(sorted(p.name for p in dist.iterdir()))} look right")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
