"""End to end in real headless Chromium: a page with /ipcbus.js is an ipcbus renderer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import ipcbus
from ipcbus.web import _static

from ..helpers import running_main, wait_for
from .browser import chromium

pytestmark = pytest.mark.skipif(
    not (_static.CLIENT_DIR / "ipcbus.js").is_file(),
    reason="the JS client is not built into src/ipcbus/web/static (js/: npm run build)",
)


@pytest.fixture
def blank(tmp_path: Path) -> Path:
    """A page with no script of its own: each test runs its script through Playwright."""
    (tmp_path / "index.html").write_text("<!doctype html><title>test page</title><p>page</p>")
    return tmp_path


ROUND_TRIPS = """
async () => {
  const { ipcRenderer, connect } = await import("/ipcbus.js");
  const out = {};
  const early = new Promise((resolve) => ipcRenderer.on("early", (event, arg) => resolve(arg)));
  const pong = new Promise((resolve) =>
    ipcRenderer.on("asynchronous-reply", (event, arg) => resolve([arg, event.senderId])));
  const news = new Promise((resolve) => ipcRenderer.once("news", (event, arg) => resolve(arg)));
  ipcRenderer.handle("title", async (event, prefix) => prefix + document.title);
  await connect();
  out.early = await early;                        // sent by main's on_connect
  out.id = ipcRenderer.id;
  ipcRenderer.send("asynchronous-message", "ping");
  out.pong = await pong;
  out.sync = await ipcRenderer.sendSync("synchronous-message", "ping");
  out.sum = await ipcRenderer.invoke("add", 1, 2);
  try { await ipcRenderer.invoke("add", "x", "y"); }
  catch (e) { out.error = [e.message, e.name, e.remoteType]; }
  try { await ipcRenderer.invoke("nothing"); } catch (e) { out.noHandler = e.message; }
  const bytes = new Uint8Array([0, 1, 2, 255]);
  const when = new Date(Date.UTC(2024, 1, 29, 12, 30, 15, 250));
  const big = 2n ** 60n + 1n;
  const [b, d, n] = await ipcRenderer.invoke("echo", bytes, when, big);
  out.bytes = b instanceof Uint8Array ? Array.from(b) : String(b);
  out.date = d instanceof Date ? d.toISOString() : String(d);
  out.big = typeof n === "bigint" ? n.toString() : String(n);
  out.types = await ipcRenderer.invoke("types", bytes, when, big);
  out.news = await news;
  out.counted = [];
  for await (const i of ipcRenderer.stream("count", 5)) out.counted.push(i);
  out.mainAsked = await ipcRenderer.invoke("ask-me");   // main calls our "title" handler
  return out;
}
"""


async def test_a_page_round_trips_everything(blank: Path) -> None:
    async with running_main() as ipc_main:

        @ipc_main.on_connect
        async def greet(contents: ipcbus.WebContents) -> None:
            await contents.send("early", "hello from on_connect")

        @ipc_main.on("asynchronous-message")
        async def on_async(event: ipcbus.IpcMainEvent, arg: str) -> None:
            await event.reply("asynchronous-reply", "pong" if arg == "ping" else "?")
            await ipc_main.broadcast("news", "broadcast")

        @ipc_main.on("synchronous-message")
        def on_sync(event: ipcbus.IpcMainEvent, arg: str) -> None:
            event.return_value = "pong"

        @ipc_main.handle("add")
        def add(event: ipcbus.IpcMainInvokeEvent, a: Any, b: Any) -> Any:
            if not isinstance(a, int):
                raise ValueError("boom")
            return a + b

        ipc_main.handle("echo", lambda event, *args: list(args))
        ipc_main.handle(
            "types", lambda event, *args: [*(type(a).__name__ for a in args), args[1].isoformat()]
        )

        @ipc_main.handle("count")
        async def count(event: ipcbus.IpcMainInvokeEvent, n: int) -> Any:
            for i in range(n):
                yield i

        @ipc_main.handle("ask-me")
        async def ask_me(event: ipcbus.IpcMainInvokeEvent) -> Any:
            return await event.sender.invoke("title", "title: ")

        web = await ipc_main.serve_web(blank)
        async with chromium() as browser:
            page = await browser.new_page()
            with anyio.fail_after(30):
                await page.goto(web.url)
                out = await page.evaluate(ROUND_TRIPS)
                (contents,) = ipc_main.get_all_web_contents()
            await page.close()
    assert out["early"] == "hello from on_connect"
    assert out["id"] == contents.id and contents.process_id == 0
    assert out["pong"] == ["pong", 0]
    assert out["sync"] == "pong"
    assert out["sum"] == 3
    assert out["error"][0] == "Error invoking remote method 'add': ValueError: boom"
    assert out["error"][2] == "ValueError"
    assert out["noHandler"] == "No handler registered for 'nothing'"
    assert out["bytes"] == [0, 1, 2, 255]
    assert out["date"] == "2024-02-29T12:30:15.250Z"
    assert out["big"] == str(2**60 + 1)
    assert out["types"] == ["bytes", "datetime", "int", "2024-02-29T12:30:15.250000+00:00"]
    assert out["news"] == "broadcast"
    assert out["counted"] == [0, 1, 2, 3, 4]
    assert out["mainAsked"] == "title: test page"


PORTS_LET_GO = """
async () => {
  const { ipcRenderer, connect } = await import("/ipcbus.js");
  const kept = new Promise((resolve) => ipcRenderer.on("ports", (event) => {
    event.ports[1].onmessage = (e) => resolve(e.data);  // started: kept by the client
  }));  // event.ports[0] is let go of
  await connect();
  ipcRenderer.send("ready");
  return await kept;
}
"""


async def test_a_port_a_page_lets_go_of_closes_and_a_started_one_is_kept(blank: Path) -> None:
    """As a web page's MessagePort in Electron: a port the page no longer refers to is
    garbage-collected and its channel closes (main's end hears "close"); one the page
    started lives on with no reference but its listener."""
    async with running_main() as ipc_main:
        ready = anyio.Event()
        ipc_main.on("ready", lambda event: ready.set())
        web = await ipc_main.serve_web(blank)
        async with chromium() as browser:
            page = await browser.new_page()
            with anyio.fail_after(30):
                await page.goto(web.url)
                answer = page.evaluate(PORTS_LET_GO)
                async with anyio.create_task_group() as tg:
                    out: list[Any] = []

                    async def evaluate() -> None:
                        out.append(await answer)

                    tg.start_soon(evaluate)
                    await ready.wait()
                    (contents,) = ipc_main.get_all_web_contents()
                    let_go, kept = ipcbus.MessageChannelMain(), ipcbus.MessageChannelMain()
                    closed = anyio.Event()
                    let_go.port1.on("close", closed.set)
                    let_go.port1.start()
                    await contents.post_message("ports", None, [let_go.port2, kept.port2])
                    cdp = await page.context.new_cdp_session(page)
                    while not closed.is_set():  # the page's finalizers run after a collection
                        await cdp.send("HeapProfiler.collectGarbage")
                        with anyio.move_on_after(0.2):
                            await closed.wait()
                    kept.port1.post_message("still here")
                assert out == ["still here"]
            await page.close()


INVOKE_WITH = """
async () => {
  const { ipcRenderer, connect } = await import("/ipcbus.js");
  await connect();
  const out = {};
  try { await ipcRenderer.invokeWith({ timeout: 300 }, "slow", "timeout"); }
  catch (e) { out.timeout = e.name; }
  const controller = new AbortController();
  ipcRenderer.once("started", () => controller.abort(new Error("changed my mind")));
  try { await ipcRenderer.invokeWith({ signal: controller.signal }, "slow", "abort"); }
  catch (e) { out.abort = e.message; }
  out.after = await ipcRenderer.invoke("cancelled");
  return out;
}
"""


async def test_invoke_with_timeout_and_abort_cancel_the_handler_in_main(blank: Path) -> None:
    cancelled: list[str] = []
    both = anyio.Event()
    async with running_main() as ipc_main:

        @ipc_main.handle("slow")
        async def slow(event: ipcbus.IpcMainInvokeEvent, why: str) -> None:
            try:
                await event.sender.send("started")
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(why)
                if len(cancelled) == 2:
                    both.set()
                raise

        @ipc_main.handle("cancelled")
        async def report(event: ipcbus.IpcMainInvokeEvent) -> list[str]:
            await wait_for(both, 10)
            return cancelled

        web = await ipc_main.serve_web(blank)
        async with chromium() as browser:
            page = await browser.new_page()
            with anyio.fail_after(30):
                await page.goto(web.url)
                out = await page.evaluate(INVOKE_WITH)
            await page.close()
    assert out["timeout"] == "IpcTimeoutError"
    assert out["abort"] == "changed my mind"
    assert out["after"] == ["timeout", "abort"]


CONNECT = """
async () => {
  const { ipcRenderer, connect } = await import("/ipcbus.js");
  await connect();
  return ipcRenderer.id;
}
"""


@pytest.mark.parametrize("leave", ["close", "reload"])
async def test_closing_or_reloading_the_tab_is_a_disconnect(blank: Path, leave: str) -> None:
    gone = anyio.Event()
    details: list[Any] = []
    async with running_main() as ipc_main:
        ipc_main.on_disconnect(lambda contents, d: (details.append(d), gone.set()))
        web = await ipc_main.serve_web(blank)
        async with chromium() as browser:
            page = await browser.new_page()
            with anyio.fail_after(30):
                await page.goto(web.url)
                assert await page.evaluate(CONNECT) == 1
                if leave == "close":
                    await page.close()
                else:
                    await page.reload()
                await wait_for(gone, 20)
                assert ipc_main.get_all_web_contents() == []
            if leave == "reload":
                await page.close()
    assert details[0].reason == "clean-exit"


WRONG_TOKEN = """
async () => {
  const { ipcRenderer, connect } = await import("/ipcbus.js");
  try { await connect(); return "connected"; }
  catch (e) { return [e.name, e.message, ipcRenderer.connected]; }
}
"""


async def test_a_wrong_token_rejects_connect_and_on_connect_never_runs(blank: Path) -> None:
    hooks: list[str] = []
    async with running_main() as ipc_main:
        ipc_main.on_connect(lambda contents: hooks.append("connect"))
        ipc_main.on_disconnect(lambda contents, d: hooks.append("disconnect"))
        web = await ipc_main.serve_web(blank)
        async with chromium() as browser:
            page = await browser.new_page()
            with anyio.fail_after(30):
                await page.goto(f"http://127.0.0.1:{web.port}/#token=not-the-token")
                result = await page.evaluate(WRONG_TOKEN)
            await page.close()
    assert result[0] == "AuthenticationError" and result[2] is False
    assert hooks == []


FOREIGN = """
async ([url, token]) => {
  const { connect } = await import("/ipcbus.js");
  try { await connect({ url, token }); return "connected"; }
  catch (e) { return e.name; }
}
"""


async def test_a_page_from_a_foreign_origin_is_refused(blank: Path) -> None:
    hooks: list[str] = []
    async with running_main() as ipc_main:
        ipc_main.on_connect(lambda contents: hooks.append("connect"))
        target = await ipc_main.serve_web(blank)
        # Another origin (another port) serving a page that knows the token.
        elsewhere = await ipc_main.serve_web(blank)
        async with chromium() as browser:
            page = await browser.new_page()
            with anyio.fail_after(30):
                await page.goto(f"http://127.0.0.1:{elsewhere.port}/")
                ws_url = f"ws://127.0.0.1:{target.port}/ipcbus"
                result = await page.evaluate(FOREIGN, [ws_url, target.token])
            await page.close()
    assert result != "connected"
    assert hooks == []


async def test_the_page_csp_blocks_inline_scripts(blank: Path) -> None:
    (blank / "inline.html").write_text(
        "<!doctype html><script>document.title = 'inline ran'</script><title>safe</title>"
    )
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(blank)
        async with chromium() as browser:
            page = await browser.new_page()
            with anyio.fail_after(30):
                await page.goto(f"http://127.0.0.1:{web.port}/inline.html")
                title = await page.title()
            await page.close()
    assert title == "safe"


@pytest.mark.parametrize(("ci", "outcome"), [("1", "fail"), ("", "skip")])
def test_without_chromium_browser_tests_fail_in_ci_and_skip_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: str
) -> None:
    from . import browser

    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(browser.os.path, "exists", lambda path: False)
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected):
        browser.chromium_path()
