"""parse_tags, the one tags rule of the registry, shadow-sync and fleet-api (PROTOCOL §5)."""

from __future__ import annotations

import json

import pytest

from daemons.registry import parse_tags


def test_tags_are_short_text_numbers_and_booleans_kept_as_text() -> None:
    assert parse_tags({"site": "a", "ring": 1, "beta": True, "k": "ü"}) == {
        "site": "a", "ring": "1", "beta": "true", "k": "ü"}


@pytest.mark.parametrize("body", ['{"k":"\\ud800"}', '{"\\udc00x":"v"}', '{"k":"a\\udc00\\ud800"}'])
def test_a_lone_surrogate_is_refused_not_waited_for(body: str) -> None:
    """Found by `make fuzz`: fleet-api accepted such tags, shadow-sync could never store them, and
    PUT /devices/{id}/tags answered 503 after waiting 5 s."""
    with pytest.raises(ValueError, match="short string"):
        parse_tags(json.loads(body))
