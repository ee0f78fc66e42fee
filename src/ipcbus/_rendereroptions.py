"""The options both renderers take, checked and kept in one place.

``ipcbus.IpcRenderer`` and ``ipcbus.sync.IpcRenderer`` take the same six
options, each class listing them in its own signature and docstring (users
read those). ``RendererOptions``, a base class of both, refuses bad values
and keeps the options as plain attributes, read when a connection opens
(``heartbeat_interval="auto"``: ``_liveness.heartbeat_for``). The defaults
both signatures name are here, but ``max_frame_size``'s (``_wire``, main's
too).
"""

from __future__ import annotations

from typing import Literal

from ._admission import check_max_in_flight
from ._wire import check_max_frame_size

__all__ = ("DEFAULT_MAX_IN_FLIGHT", "DEFAULT_SEND_TIMEOUT", "RendererOptions")

DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_SEND_TIMEOUT = 30.0


class RendererOptions:
    """A renderer's options (``max_frame_size`` ... ``send_timeout``), checked.

    No slots and no ``__init__``: the renderer's constructor calls
    :meth:`_keep_options` with the arguments it was given.
    """

    max_frame_size: int
    send_tracebacks: bool
    max_in_flight: int
    heartbeat_interval: float | Literal["auto"] | None
    heartbeat_timeout: float | None
    send_timeout: float | None

    def _keep_options(
        self,
        *,
        max_frame_size: int,
        send_tracebacks: bool,
        max_in_flight: int,
        heartbeat_interval: float | Literal["auto"] | None,
        heartbeat_timeout: float | None,
        send_timeout: float | None,
    ) -> None:
        """Check the options and keep them.

        Raises:
            ValueError: ``max_in_flight`` below 1, or ``max_frame_size``
                below ``MIN_MAX_FRAME_SIZE``.
        """
        check_max_in_flight(max_in_flight)
        check_max_frame_size(max_frame_size)
        self.max_frame_size = max_frame_size
        self.send_tracebacks = send_tracebacks
        self.max_in_flight = max_in_flight
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.send_timeout = send_timeout
