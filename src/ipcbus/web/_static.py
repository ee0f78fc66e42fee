"""What a GET answers: files from ``static_dir``, the built JS client, and the security headers.

Rules (SPEC section 10, docs/web.md "Security"):

* A request never reaches a file outside ``static_dir``. The path is
  percent-decoded once, then split on ``/``; a segment that is ``..`` or
  ``.``, starts with a dot (``.git``, ``.env``), or holds a NUL or a
  backslash is refused with 404 before the file system is asked. Whatever is
  left is resolved (following symlinks) and must still lie inside the
  resolved ``static_dir``, else 403: a symlink pointing out is refused, not
  followed. There are no redirects at all.
* ``/ipcbus.js`` (an ES module, ``text/javascript``) and ``/ipcbus.d.ts`` are
  the client built into the package; they win over files of the same name.
* Every response carries ``Content-Security-Policy`` (``script-src 'self'``
  by default: no inline scripts) and ``X-Content-Type-Options: nosniff``.

Sans-I/O like the rest of the decisions: :meth:`StaticSite.respond` returns a
:class:`Response` whose file the driver (h11 or ASGI) streams in chunks.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote_to_bytes

import anyio

__all__ = ("CLIENT_DIR", "DEFAULT_CSP", "Response", "StaticSite", "opened")

_CHUNK_SIZE = 64 * 1024  # bytes per read when a file is sent

DEFAULT_CSP = "script-src 'self'"

# The built client, committed inside the package (js/ builds it).
CLIENT_DIR = Path(__file__).parent / "static"
_CLIENT_FILES = {
    "/ipcbus.js": ("ipcbus.js", "text/javascript; charset=utf-8"),
    "/ipcbus.d.ts": ("ipcbus.d.ts", "application/typescript; charset=utf-8"),
}

# Fixed types for what pages are made of: the system's mime table differs
# between machines, and a module script served with a wrong type does not run.
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}


@dataclass
class Response:
    """A status, headers, and either a short body or a file to stream."""

    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    file: Path | None = None
    size: int = 0  # of ``file``, or of ``body``


class StaticSite:
    """Answers GET and HEAD for one ``static_dir`` (or none) plus the JS client."""

    def __init__(self, static_dir: str | os.PathLike[str] | None, csp: str | None) -> None:
        self.root: Path | None = None
        if static_dir is not None:
            root = Path(static_dir).resolve()
            if not root.is_dir():
                raise ValueError(f"static_dir {os.fspath(static_dir)!r} is not a directory")
            self.root = root
        self.security_headers = [(b"x-content-type-options", b"nosniff")]
        if csp:
            self.security_headers.append((b"content-security-policy", csp.encode("latin-1")))
        self.security_headers.append((b"referrer-policy", b"no-referrer"))

    def respond(self, method: str, target: bytes) -> Response:
        """The response to ``method`` on ``target`` (the raw request target, undecoded)."""
        if method not in ("GET", "HEAD"):
            response = self.error(405, "only GET and HEAD are served here")
            response.headers.append((b"allow", b"GET, HEAD"))
            return response
        raw_path = target.split(b"?", 1)[0]
        if not raw_path.startswith(b"/"):
            return self.error(400, "the request target must be a path")
        if (client := _CLIENT_FILES.get(raw_path.decode("latin-1"))) is not None:
            return self._client_file(*client)
        if self.root is None:
            return self.error(404, "not found (this server has no static_dir)")
        return self._static_file(self.root, raw_path)

    def error(self, status: int, message: str) -> Response:
        """A short text/plain response (it never echoes the request)."""
        body = f"{status} {message}\n".encode()
        return self._response(status, "text/plain; charset=utf-8", body=body)

    def _client_file(self, name: str, content_type: str) -> Response:
        path = CLIENT_DIR / name
        if not path.is_file():
            return self.error(
                404, f"{name} is not built into this ipcbus (build it from js/: npm run build)"
            )
        return self._response(200, content_type, file=path, size=path.stat().st_size)

    def _static_file(self, root: Path, raw_path: bytes) -> Response:
        segments = _safe_segments(raw_path)
        if segments is None:
            return self.error(404, "not found")
        path = root.joinpath(*segments)
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a symlink loop
            return self.error(404, "not found")
        if not resolved.is_relative_to(root):
            return self.error(403, "forbidden: the path leads outside static_dir")
        if resolved.is_dir():
            resolved = resolved / "index.html"
            if not resolved.is_file():
                return self.error(404, "not found")
            # index.html itself may be a symlink out
            if not resolved.resolve().is_relative_to(root):
                return self.error(403, "forbidden: the path leads outside static_dir")
        if not resolved.is_file():
            return self.error(404, "not found")
        return self._response(
            200, _content_type(resolved), file=resolved, size=resolved.stat().st_size
        )

    def _response(
        self,
        status: int,
        content_type: str,
        *,
        body: bytes = b"",
        file: Path | None = None,
        size: int | None = None,
    ) -> Response:
        headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body) if size is None else size).encode()),
            # A UI under development changes; the browser asks again each time.
            (b"cache-control", b"no-cache"),
            *self.security_headers,
        ]
        return Response(status, headers, body, file, len(body) if size is None else size)


def _safe_segments(raw_path: bytes) -> list[str] | None:
    """The path's segments, or ``None`` if any could leave the directory or is hidden.

    Decoded once: ``%2e%2e`` is ``..`` and ``%2f`` is ``/`` here, so they are
    judged like the characters they stand for. Empty segments (``//``) are
    skipped, so an absolute path stays under the root.
    """
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in path or "\\" in path:
        return None
    segments = [segment for segment in path.split("/") if segment]
    if any(segment.startswith(".") for segment in segments):
        return None  # "..", ".", and hidden files such as .git or .env
    return segments


def _content_type(path: Path) -> str:
    known = _TYPES.get(path.suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[anyio.AsyncFile[bytes]]:
    """``path`` open for reading while a response sends it, then closed.

    Closed in a shielded scope: anyio closes a file in a worker thread, and a
    cancelled close (the client left, main shut down) would leave the file
    open until the garbage collector found it.
    """
    file = await anyio.open_file(path, "rb")
    try:
        yield file
    finally:
        with anyio.CancelScope(shield=True):
            await file.aclose()
