"""Main's ``admit``: the renderer id is taken only once token and version are accepted.

docs/protocol.md, "Handshake": a peer refused for its token, its version or
for want of room uses up no id; ``admit`` may refuse with a close code of its own.
"""

from __future__ import annotations

from ipcbus._events import ConnectionTerminated, HandshakeCompleted
from ipcbus._protocol import Connection, HandshakeRefused, Role, State
from ipcbus._wire import PROTOCOL_VERSION, CloseCode, Hello, Welcome

from .helpers import PROCESS_ID, TOKEN, frame


def _main(ids: list[int], room: bool = True) -> Connection:
    def admit() -> int:
        if not room:
            raise HandshakeRefused("too many connections: no room", CloseCode.TOO_MANY_CONNECTIONS)
        ids.append(len(ids) + 1)
        return ids[-1]

    return Connection(Role.MAIN, token=TOKEN, admit=admit)


def test_admit_gives_the_id_in_welcome() -> None:
    ids: list[int] = []
    main = _main(ids)
    main.receive_data(frame(Hello(PROTOCOL_VERSION, TOKEN, PROCESS_ID)))
    assert ids == [1]
    assert main.state is State.OPEN and main.renderer_id == 1
    assert main.events_received() == [HandshakeCompleted(1, PROCESS_ID)]
    assert bytes(main.data_to_send()) == frame(Welcome(PROTOCOL_VERSION, 1, main._max_frame_size))


def test_a_wrong_token_or_version_is_refused_before_admit() -> None:
    ids: list[int] = []
    for hello in (Hello(PROTOCOL_VERSION, "wrong", 1), Hello(99, TOKEN, 1)):
        main = _main(ids)
        main.receive_data(frame(hello))
        assert main.state is State.CLOSED
    assert ids == []


def test_admit_may_refuse_with_its_own_code() -> None:
    main = _main([], room=False)
    main.receive_data(frame(Hello(PROTOCOL_VERSION, TOKEN, PROCESS_ID)))
    assert main.state is State.CLOSED
    [event] = main.events_received()
    assert isinstance(event, ConnectionTerminated)
    assert event.code is CloseCode.TOO_MANY_CONNECTIONS
    assert event.reason == "too many connections: no room"
