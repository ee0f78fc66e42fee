"""What the web server serves over HTTP: static_dir and nothing outside it, with its headers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from ipcbus.web import _static

from ..helpers import running_main
from .helpers import header, http_get, status_of


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """ui/ (the static_dir) beside a secret file it must never reveal."""
    (tmp_path / "secret.txt").write_text("SECRET")
    ui = tmp_path / "ui"
    (ui / "sub").mkdir(parents=True)
    (ui / "index.html").write_text("<h1>home</h1>")
    (ui / "app.js").write_text("console.log(1)")
    (ui / "sub" / "index.html").write_text("<h1>sub</h1>")
    (ui / ".env").write_text("SECRET")
    (ui / "out").symlink_to(tmp_path / "secret.txt")
    (ui / "outdir").symlink_to(tmp_path)
    (ui / "inside").symlink_to(ui / "app.js")
    return ui


async def test_files_are_served_with_their_type_and_security_headers(site: Path) -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(site)
        with anyio.fail_after(10):
            home = await http_get(web.port, "/")
            script = await http_get(web.port, "/app.js")
            sub = await http_get(web.port, "/sub")
            linked = await http_get(web.port, "/inside")
            head = await http_get(web.port, "/app.js", method="HEAD")
            missing = await http_get(web.port, "/nope.html")
    assert status_of(home) == 200 and home.endswith(b"<h1>home</h1>")
    assert header(home, "content-type") == "text/html; charset=utf-8"
    assert header(script, "content-type") == "text/javascript; charset=utf-8"
    assert sub.endswith(b"<h1>sub</h1>")  # a directory's index.html, no redirect
    assert linked.endswith(b"console.log(1)")  # a symlink that stays inside is fine
    assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")
    assert header(head, "content-length") == str(len("console.log(1)"))
    for response in (home, script, missing):
        assert header(response, "content-security-policy") == "script-src 'self'"
        assert header(response, "x-content-type-options") == "nosniff"
    assert status_of(missing) == 404


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/sub/../../secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/out",
        "/outdir/secret.txt",
        "/.env",
        "/app.js%00.html",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        str(Path("/etc/passwd")),
    ],
)
async def test_nothing_outside_static_dir_is_reachable(site: Path, target: str) -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(site)
        with anyio.fail_after(10):
            response = await http_get(web.port, target)
    assert status_of(response) in (403, 404)  # never a redirect, never the file
    assert b"SECRET" not in response and b"root:" not in response


async def test_symlinks_out_are_forbidden_not_followed(site: Path) -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(site)
        with anyio.fail_after(10):
            assert status_of(await http_get(web.port, "/out")) == 403


async def test_csp_is_configurable(site: Path) -> None:
    async with running_main() as ipc_main:
        custom = await ipc_main.serve_web(site, content_security_policy="default-src 'self'")
        none = await ipc_main.serve_web(site, content_security_policy=None)
        with anyio.fail_after(10):
            assert header(await http_get(custom.port, "/"), "content-security-policy") == (
                "default-src 'self'"
            )
            plain = await http_get(none.port, "/")
    assert header(plain, "content-security-policy") is None
    assert header(plain, "x-content-type-options") == "nosniff"


async def test_the_js_client_is_an_es_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = tmp_path / "built"
    built.mkdir()
    (built / "ipcbus.js").write_text("export const ipcRenderer = {};")
    (built / "ipcbus.d.ts").write_text("export declare const ipcRenderer: unknown;")
    monkeypatch.setattr(_static, "CLIENT_DIR", built)
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web()  # no static_dir: the client is still there
        with anyio.fail_after(10):
            script = await http_get(web.port, "/ipcbus.js")
            types = await http_get(web.port, "/ipcbus.d.ts")
            home = await http_get(web.port, "/")
    assert status_of(script) == 200 and script.endswith(b"export const ipcRenderer = {};")
    assert header(script, "content-type") == "text/javascript; charset=utf-8"
    assert status_of(types) == 200 and b"declare" in types
    assert status_of(home) == 404


async def test_a_missing_client_build_says_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_static, "CLIENT_DIR", tmp_path)
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web()
        with anyio.fail_after(10):
            response = await http_get(web.port, "/ipcbus.js")
    assert status_of(response) == 404 and b"npm run build" in response


async def test_other_methods_and_bodies_are_refused(site: Path) -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(site)
        with anyio.fail_after(10):
            post = await http_get(web.port, "/", method="POST", extra="Content-Length: 0\r\n")
            body = await http_get(web.port, "/", extra="Content-Length: 5\r\n")
            plain = await http_get(web.port, "/ipcbus")  # no upgrade
    assert status_of(post) == 405 and header(post, "allow") == "GET, HEAD"
    assert status_of(body) == 400
    assert status_of(plain) == 426


@pytest.mark.parametrize(
    "key", ["\u00e9\u00e9\u00e9\u00e9", "AAAAAAAAAAAAAAAAAAAAA\u00ff==", "short=="]
)
async def test_an_upgrade_with_a_bad_key_is_refused_with_400(
    site: Path, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Any Sec-WebSocket-Key that is not 16 bytes of base64, non-ASCII ones included,
    gets a 400 that says so, and nothing is logged as an internal error."""
    upgrade = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
    )
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(site)
        with anyio.fail_after(10):
            response = await http_get(web.port, "/ipcbus", extra=upgrade)
    assert status_of(response) == 400
    assert b"Sec-WebSocket-Key" in response
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_an_oversized_request_head_is_refused(site: Path) -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(site)
        with anyio.fail_after(10):
            response = await http_get(web.port, "/", extra=f"X-Big: {'a' * 20000}\r\n")
    assert status_of(response) == 431


async def test_a_slow_client_is_dropped_and_costs_nobody_else(site: Path) -> None:
    async with running_main(handshake_timeout=0.5) as ipc_main:
        web = await ipc_main.serve_web(site)
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", web.port) as slow:
                await slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
                assert status_of(await http_get(web.port, "/")) == 200  # others are served
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await slow.receive()  # dropped after handshake_timeout, no answer


async def test_keep_alive_serves_several_requests_on_one_connection(site: Path) -> None:
    async with running_main() as ipc_main:
        web = await ipc_main.serve_web(site)
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", web.port) as stream:
                request = b"GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n"
                await stream.send(request * 2)
                received = b""
                while received.count(b"console.log(1)") < 2:
                    received += await stream.receive()
    assert received.count(b"200 OK") == 2


def test_static_dir_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        _static.StaticSite(tmp_path / "missing", None)
    assert os.path.isdir(tmp_path)


async def test_a_file_being_sent_is_closed_when_the_sending_is_cancelled(site: Path) -> None:
    """The client left, or main shut down, while a file was being sent: the file is
    closed then, not left to the garbage collector (anyio closes a file in a worker
    thread, which a cancelled scope skips unless the close is shielded)."""
    files: list[Any] = []
    with anyio.CancelScope() as scope:
        async with _static.opened(site / "app.js") as file:
            files.append(file)
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # cancelled here, as a send would be
    assert scope.cancelled_caught
    assert files[0].closed
