"""Selectors (PROTOCOL §5): `{"hw"?: str, "fw"?: glob, "tags"?: {k: v}, "ids"?: [..]}`, ANDed."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from daemons.protocol.errors import Rejected
from daemons.protocol.messages import valid_device_id

MAX_IDS = 100_000


class SelectorError(Rejected):
    """A selector that is not one (always code 400); the message says which field and why."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


@dataclass(frozen=True)
class Selector:
    hw: str | None = None
    fw: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    ids: frozenset[str] | None = None

    @property
    def needs_device_fields(self) -> bool:
        return self.hw is not None or self.fw is not None or bool(self.tags)

    def matches(self, device_id: str, hw: str | None, fw: str | None, tags: dict[str, str]) -> bool:
        if self.ids is not None and device_id not in self.ids:
            return False
        if self.hw is not None and hw != self.hw:
            return False
        if self.fw is not None and (fw is None or not fnmatch.fnmatchcase(fw, self.fw)):
            return False
        return all(tags.get(k) == v for k, v in self.tags.items())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.hw is not None:
            out["hw"] = self.hw
        if self.fw is not None:
            out["fw"] = self.fw
        if self.tags:
            out["tags"] = dict(self.tags)
        if self.ids is not None:
            out["ids"] = sorted(self.ids)
        return out


def tag_value(value: Any) -> str | None:
    """Tags are strings; numbers and booleans are accepted and compared as their JSON text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def parse_selector(raw: Any) -> Selector:
    """Validate a selector; raise SelectorError (a ValueError) with a message an operator understands."""
    if raw is None:
        return Selector()
    if not isinstance(raw, dict):
        raise SelectorError("selector must be an object")
    unknown = set(raw) - {"hw", "fw", "tags", "ids"}
    if unknown:
        raise SelectorError(f"unknown selector field {sorted(unknown)[0]!r}")
    for key in ("hw", "fw"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            raise SelectorError(f"selector.{key} must be a non-empty string")
    tags: dict[str, str] = {}
    if "tags" in raw:
        if not isinstance(raw["tags"], dict):
            raise SelectorError("selector.tags must be an object")
        for k, v in raw["tags"].items():
            text = tag_value(v)
            if text is None:
                raise SelectorError(f"selector.tags.{k} must be a string")
            tags[k] = text
    ids: frozenset[str] | None = None
    if "ids" in raw:
        if not isinstance(raw["ids"], list) or len(raw["ids"]) > MAX_IDS:
            raise SelectorError(f"selector.ids must be a list of at most {MAX_IDS} device ids")
        bad = [i for i in raw["ids"] if not valid_device_id(i)]
        if bad:
            raise SelectorError(f"selector.ids holds an invalid device id: {str(bad[0])[:70]!r}")
        ids = frozenset(raw["ids"])
    return Selector(raw.get("hw"), raw.get("fw"), tags, ids)
