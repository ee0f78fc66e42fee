"""Addresses: ``"unix:/path"``, ``"tcp://host:port"`` or a path, parsed; and TCP's TLS rule.

Addresses are strings (``"unix:/path"``, ``"tcp://host:port"``) or a
``pathlib.Path`` (a unix socket). Security default (SPEC section 8): TCP
refuses a non-loopback host unless TLS is configured (``check_tls``, for
listening, ``_listensocket``, and connecting, ``_transport``, alike).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass

__all__ = ("Address", "TcpAddress", "UnixAddress", "check_tls", "parse_address")


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


Address = UnixAddress | TcpAddress


def parse_address(address: str | os.PathLike[str]) -> Address:
    """Parse ``"unix:/path"``, ``"tcp://host:port"`` or a path.

    Raises:
        ValueError: the address has another form; the message shows the right ones.
    """
    if isinstance(address, os.PathLike):
        return UnixAddress(os.fspath(address))
    if not isinstance(address, str):
        raise TypeError(f"address must be a str or a path, not {type(address).__name__}")
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if path:
            return UnixAddress(path)
    elif address.startswith("tcp://"):
        rest = address[len("tcp://") :]
        host, sep, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if sep and host and port.isdigit() and int(port) < 65536:
            return TcpAddress(host, int(port))
    raise ValueError(
        f"unsupported address {address!r}: use 'unix:/path/to/socket', "
        "'tcp://127.0.0.1:PORT' or a pathlib.Path"
    )


def check_tls(address: TcpAddress, ssl_context: ssl.SSLContext | None) -> None:
    if not address.is_loopback and ssl_context is None:
        raise ValueError(
            f"refusing plain TCP to non-loopback host {address.host!r}: anyone on the network "
            "could connect or listen in. Pass ssl_context=ssl.SSLContext(...) to use TLS, or "
            "use a loopback host (127.0.0.1, ::1, localhost) or a unix socket"
        )
