"""Web pages as renderers: ``IpcMain.serve_web`` and an ASGI app (SPEC section 10, docs/web.md).

Needs the ``web`` extra (``pip install 'ipcbus[web]'``): h11 and wsproto,
python-hyper's sans-I/O HTTP and WebSocket protocols, driven here by anyio
so the server runs on asyncio, uvloop and trio alike.
"""

from __future__ import annotations

try:
    import h11  # noqa: F401
    import wsproto  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"ipcbus.web needs the web extra ({exc}): pip install 'ipcbus[web]'") from exc

from ._asgi import AsgiApp, asgi_app
from ._server import WebServer

__all__ = ("AsgiApp", "WebServer", "asgi_app")
