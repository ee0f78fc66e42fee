"""examples/web_page in real Chromium (with the screenshot in docs/), and `ipcbus demo --web`."""

from __future__ import annotations

import os
import runpy
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from ipcbus.web import _static

from ..helpers import child_env, wait_for
from .browser import chromium
from .helpers import http_get, status_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "web_page"
SCREENSHOT = ROOT / "docs" / "web-example.png"

needs_client = pytest.mark.skipif(
    not (_static.CLIENT_DIR / "ipcbus.js").is_file(),
    reason="the JS client is not built into src/ipcbus/web/static (js/: npm run build)",
)


@needs_client
async def test_the_example_page_round_trips_and_is_photographed(tmp_path: Path) -> None:
    """The page after its round trips. docs/web-example.png is written when it is
    missing or ``IPCBUS_UPDATE_DOCS`` is set (a fresh PNG differs by a few bytes
    each run; the docs need not change with every test run)."""
    example = runpy.run_path(str(EXAMPLE / "main.py"), run_name="web_example_test")
    ipc_main, gone = example["make_main"]()
    shot = tmp_path / "web-example.png"
    async with ipc_main:
        web = await ipc_main.serve_web(EXAMPLE)
        async with chromium() as browser:
            page = await browser.new_page(viewport={"width": 900, "height": 520})
            with anyio.fail_after(30):
                await page.goto(web.url)
                await page.wait_for_selector("body[data-done]")
                status = await page.inner_text("#status")
                lines = await page.locator("#log li").all_inner_texts()
                await page.screenshot(path=str(shot))
                await page.close()
                await wait_for(gone, 20)
    assert status == "all round trips done"
    assert lines[-1] == 'main asked for my title and got "ipcbus web page"'
    assert "Error invoking remote method 'add': TypeError: add() takes two numbers" in lines[-2]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("IPCBUS_UPDATE_DOCS") or not SCREENSHOT.exists():
        shutil.copyfile(shot, SCREENSHOT)


async def test_ipcbus_demo_web_serves_the_example() -> None:
    process = await anyio.open_process(
        [sys.executable, "-m", "ipcbus", "demo", "--web", "--no-browser"],
        env=child_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with anyio.fail_after(20):
            first = b""
            while b"\n" not in first:
                first += await process.stdout.receive()
            url = first.split(b" at ", 1)[1].split()[0].decode()
            assert "/#token=" in url
            port = int(url.split(":")[2].split("/")[0])
            home = await http_get(port, "/")
            assert status_of(home) == 200 and b"<title>ipcbus web page</title>" in home
    finally:
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            await process.wait()
        await process.aclose()
