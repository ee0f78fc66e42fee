"""An unauthenticated peer may not make main buffer a large frame."""

from __future__ import annotations

from ipcbus._events import ConnectionTerminated
from ipcbus._protocol import HANDSHAKE_MAX_FRAME_SIZE, Connection, Role, State
from ipcbus._wire import CloseCode

from .helpers import TOKEN, handshake


def test_before_the_handshake_a_large_frame_header_ends_the_connection() -> None:
    main = Connection(Role.MAIN, token=TOKEN, max_frame_size=64 * 1024 * 1024)
    main.receive_data((HANDSHAKE_MAX_FRAME_SIZE + 1).to_bytes(4, "big"))
    [event] = main.events_received()
    assert isinstance(event, ConnectionTerminated)
    assert event.code is CloseCode.FRAME_TOO_LARGE
    assert main.state is State.CLOSED


def test_after_the_handshake_the_configured_limit_applies() -> None:
    pair = handshake()
    pair.renderer.send_message("big", [b"x" * (HANDSHAKE_MAX_FRAME_SIZE * 2)])
    [event] = pair.send(pair.renderer)
    assert event.channel == "big"  # type: ignore[union-attr]
    assert pair.main.state is State.OPEN
