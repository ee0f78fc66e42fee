from __future__ import annotations

import pytest

from .helpers import FEEDS, Feed


@pytest.fixture(params=FEEDS, ids=[feed.value for feed in FEEDS])
def mode(request: pytest.FixtureRequest) -> Feed:
    """Each test that takes ``mode`` runs once per way of feeding bytes."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=[True, False], ids=["renderer->main", "main->renderer"])
def renderer_sends(request: pytest.FixtureRequest) -> bool:
    """Each test that takes ``renderer_sends`` runs in both directions."""
    return request.param  # type: ignore[no-any-return]
