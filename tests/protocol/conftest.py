from __future__ import annotations

from collections.abc import Iterator

import pytest

from ipcbus._protocol import Connection

from .helpers import FEEDS, Feed


@pytest.fixture(params=FEEDS, ids=[feed.value for feed in FEEDS])
def mode(request: pytest.FixtureRequest) -> Feed:
    """Each test that takes ``mode`` runs once per way of feeding bytes."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=[True, False], ids=["renderer->main", "main->renderer"])
def renderer_sends(request: pytest.FixtureRequest) -> bool:
    """Each test that takes ``renderer_sends`` runs in both directions."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def pending_output_is_what_data_to_send_gives(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every protocol test checks, each time output is taken, that ``pending_output``
    (an attribute kept by every change to the outbox) counts exactly those bytes."""
    take = Connection.data_to_send

    def checked(self: Connection) -> bytearray:
        before = self.pending_output
        out = take(self)
        assert before == len(out), f"pending_output was {before}, {len(out)} bytes queued"
        assert self.pending_output == 0
        return out

    monkeypatch.setattr(Connection, "data_to_send", checked)
    yield
