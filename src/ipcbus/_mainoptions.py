"""The settings ``IpcMain`` takes, checked and kept in one place.

``MainOptions``, a base class of ``main.IpcMain``, refuses bad values and
keeps the settings as plain attributes, which the rooms of main read when a
renderer connects (``_serving``), while it is served (``_liveness``,
``_portroute``) and when main shuts down. ``IpcMain`` lists them in its own
signature and docstring, which users read; the renderers' twin is
``_rendereroptions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from ._registry import channel_set
from ._wire import check_max_frame_size

__all__ = ("MainOptions",)


class MainOptions:
    """``IpcMain``'s settings (``max_frame_size`` ... ``max_open_ports``), checked.

    No slots and no ``__init__``: ``IpcMain``'s constructor calls
    :meth:`_keep_options` with the arguments it was given.
    """

    allowed_channels: frozenset[str] | None
    max_frame_size: int
    handshake_timeout: float
    shutdown_grace: float
    send_tracebacks: bool
    max_in_flight: int
    max_connections: int
    max_pending_handshakes: int
    max_open_ports: int
    heartbeat_interval: float | Literal["auto"] | None
    heartbeat_timeout: float | None
    send_timeout: float | None

    def _keep_options(
        self,
        *,
        max_frame_size: int,
        handshake_timeout: float,
        shutdown_grace: float,
        send_tracebacks: bool,
        max_in_flight: int,
        max_connections: int,
        max_pending_handshakes: int,
        heartbeat_interval: float | Literal["auto"] | None,
        heartbeat_timeout: float | None,
        send_timeout: float | None,
        allowed_channels: Iterable[str] | None,
        max_open_ports: int,
    ) -> None:
        """Check the settings and keep them.

        Raises:
            ValueError: a limit below 1, ``max_frame_size`` below
                ``MIN_MAX_FRAME_SIZE``, or an empty channel name in
                ``allowed_channels``.
            TypeError: ``allowed_channels`` is a ``str``, or holds a name
                that is not one.
        """
        if min(max_in_flight, max_connections, max_pending_handshakes, max_open_ports) < 1:
            raise ValueError(
                "max_in_flight, max_connections, max_pending_handshakes and max_open_ports "
                "must be >= 1"
            )
        check_max_frame_size(max_frame_size)
        self.allowed_channels = channel_set(allowed_channels)
        self.max_frame_size = max_frame_size
        self.handshake_timeout = handshake_timeout
        self.shutdown_grace = shutdown_grace
        self.send_tracebacks = send_tracebacks
        self.max_in_flight = max_in_flight
        self.max_connections = max_connections
        self.max_pending_handshakes = max_pending_handshakes
        self.max_open_ports = max_open_ports
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.send_timeout = send_timeout
