"""Who may open the WebSocket: the upgrade request's headers and its ``Origin``.

A browser lets any site's script open a WebSocket to 127.0.0.1 and sends
the page's cookies-free request with an ``Origin`` header it cannot forge
(cross-site WebSocket hijacking). So a request that has an ``Origin`` must
come from the server's own origin, exactly as served (scheme, host, port:
``http://localhost:8000`` and ``http://127.0.0.1:8000`` are different
origins), or from one the application listed in ``allowed_origins``;
otherwise the upgrade is refused with 403 before a WebSocket exists. A
request with no ``Origin`` is not from a browser; it is let through, and
like every connection still needs the token in its first message (the
``Hello``), which never appears in an HTTP line.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

__all__ = ("OriginPolicy", "origin_of", "refusal")


def origin_of(scheme: str, host: str, port: int) -> str:
    """The origin a browser sends for a page served at ``scheme://host:port``."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host.lower()}" + ("" if port == default else f":{port}")


class OriginPolicy:
    """The origins allowed to open the WebSocket: our own plus ``allowed_origins``."""

    def __init__(self, own: Iterable[str], allowed: Iterable[str] | None) -> None:
        if isinstance(allowed, str):
            raise TypeError("allowed_origins must be a collection of origins, not a str")
        self.origins = frozenset(origin.rstrip("/").lower() for origin in (*own, *(allowed or ())))

    def allows(self, origin: str | None) -> bool:
        """Whether a request with this ``Origin`` header (``None``: none) may upgrade."""
        return origin is None or origin.lower() in self.origins


def refusal(headers: dict[str, str], policy: OriginPolicy) -> tuple[int, str] | None:
    """Why this upgrade request must be refused (status, message), or ``None`` if it may go on.

    ``headers`` maps lower-case names to values (repeated headers joined by
    ``", "``), as h11 and ASGI give them.
    """
    if not _has_token(headers.get("upgrade", ""), "websocket"):
        return 426, "this address only speaks WebSocket (Upgrade: websocket)"
    if not _has_token(headers.get("connection", ""), "upgrade"):
        return 400, "a WebSocket upgrade needs 'Connection: Upgrade'"
    if headers.get("sec-websocket-version", "").strip() != "13":
        return 426, "only WebSocket version 13 is spoken here"
    try:
        key = base64.b64decode(headers.get("sec-websocket-key", ""), validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        key = b""
    if len(key) != 16:
        return 400, "a WebSocket upgrade needs a valid Sec-WebSocket-Key"
    if not policy.allows(headers.get("origin")):
        return 403, (
            "forbidden: this page's origin may not connect "
            "(serve it from this server, or list it in allowed_origins)"
        )
    return None


def _has_token(value: str, token: str) -> bool:
    return token in (part.strip().lower() for part in value.split(","))
