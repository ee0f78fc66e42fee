"""A web page as an ipcbus renderer: ping/pong, invoke, a push from main, main invoking the page.

Main serves this folder (``index.html``, ``app.js``) with ``serve_web`` and
prints the URL to open; the token is in its ``#fragment``. ``ipcbus demo
--web`` runs this file.

Run: ``python examples/web_page/main.py`` (needs ``pip install 'ipcbus[web]'``)
     ``python examples/web_page/main.py --check``: open the page in headless
     Chromium (Playwright with the system's ``chromium``), print what main and
     the page saw, and exit; ``examples/run_all.py`` runs this.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import webbrowser
from pathlib import Path

import anyio

from ipcbus import IpcMain, IpcMainEvent, IpcMainInvokeEvent, WebContents

HERE = Path(__file__).resolve().parent
SKIP = 77  # exit code for "cannot check here" (no Chromium), as automake uses it

EXPECTED = """
[main    ] page 1 connected
[main    ] synchronous-message: 'ping'
[main    ] asynchronous-message: 'ping'
[main    ] invoke add(1, 2) from page 1
[main    ] the page's title is 'ipcbus web page'
[page    ] connected as renderer 1
[page    ] push from main: "hello from main"
[page    ] sendSync returned "pong"
[page    ] asynchronous-reply: "pong"
[page    ] invoke add(1, 2) = 3
[page    ] invoke add(1, "two") failed: Error invoking remote method 'add': TypeError: \
add() takes two numbers
[page    ] main asked for my title and got "ipcbus web page"
[main    ] page 1 gone: clean-exit
"""


def say(side: str, text: str) -> None:
    print(f"[{side:8}] {text}", flush=True)


def make_main() -> tuple[IpcMain, anyio.Event]:
    """Main's channels, as in the seed's ping/pong; the event is set when the page leaves."""
    ipc_main = IpcMain()
    gone = anyio.Event()

    @ipc_main.on_connect
    async def connected(contents: WebContents) -> None:
        say("main", f"page {contents.id} connected")
        await contents.send("main-says", "hello from main")  # before the page's connect() resolves

    @ipc_main.on_disconnect
    def disconnected(contents: WebContents, details: object) -> None:
        say("main", f"page {contents.id} gone: {getattr(details, 'reason', '?')}")
        gone.set()

    @ipc_main.on("synchronous-message")
    def on_sync(event: IpcMainEvent, arg: str) -> None:
        say("main", f"synchronous-message: {arg!r}")
        event.return_value = "pong"

    @ipc_main.on("asynchronous-message")
    async def on_async(event: IpcMainEvent, arg: str) -> None:
        say("main", f"asynchronous-message: {arg!r}")
        await event.reply("asynchronous-reply", "pong")

    @ipc_main.handle("add")
    def add(event: IpcMainInvokeEvent, a: object, b: object) -> object:
        if not all(isinstance(x, int | float) for x in (a, b)):
            raise TypeError("add() takes two numbers")
        say("main", f"invoke add({a}, {b}) from page {event.sender.id}")
        return a + b  # type: ignore[operator]

    @ipc_main.handle("whats-my-title")
    async def whats_my_title(event: IpcMainInvokeEvent) -> str:
        title: str = await event.sender.invoke("page-title")  # answered by ipcRenderer.handle
        say("main", f"the page's title is {title!r}")
        return title

    return ipc_main, gone


async def serve(open_browser: bool, port: int) -> None:
    ipc_main, _ = make_main()
    async with ipc_main:
        web = await ipc_main.serve_web(HERE, port=port)
        print(f"serving {HERE} at {web.url}", flush=True)
        print("open that URL in a browser; Ctrl-C to stop", flush=True)
        if open_browser and can_open_a_browser():
            webbrowser.open(web.url)
        await anyio.sleep_forever()


def can_open_a_browser() -> bool:
    """Whether a browser can show up here: not in CI, and on Linux only with a display."""
    if os.environ.get("CI"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


async def check() -> int:
    """Open the page in headless Chromium, wait for its round trips, print both sides."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("no chromium or playwright here: cannot check the page", file=sys.stderr)
        return 1 if os.environ.get("CI") else SKIP
    ipc_main, gone = make_main()
    with anyio.fail_after(60):
        async with ipc_main, async_playwright() as playwright:
            web = await ipc_main.serve_web(HERE)
            browser = await playwright.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"],
            )
            try:
                page = await browser.new_page()
                await page.goto(web.url)
                await page.wait_for_selector("body[data-done]")
                for line in await page.locator("#log li").all_inner_texts():
                    say("page", line)
                await page.close()  # closing the tab is a disconnect
                await gone.wait()
            finally:
                await browser.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="run the page in headless Chromium")
    parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    parser.add_argument("--port", type=int, default=0, help="default: any free port")
    args = parser.parse_args()
    if args.check:
        return anyio.run(check)
    try:
        anyio.run(serve, not args.no_browser, args.port)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
