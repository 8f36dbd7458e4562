"""One rollout as the planner sees it: its meta record, its devices' records, and job ids.

The store keeps these as Redis hash fields and compact JSON (otaplanner.rollout_store); the Lua
scripts read the one-letter keys of a device record. This is their typed form: the one-letter
keys never leave `DeviceRecord.to_json` / `from_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, ClassVar, NotRequired

# typing_extensions' TypedDict, not typing's: pydantic (the API's response model of a release is this
# very type) accepts only that one before Python 3.12.
from typing_extensions import TypedDict

from otaplanner import rollout as ro


class Release(TypedDict):
    """A registered release (PROTOCOL §3), as stored in `ota:releases` and retained on its topic.

    The one definition of its shape: fleet-api answers it as is (daemons.api.models).
    """

    version: str
    hw: list[str]
    object: str
    sha256: str
    size: int
    secure_version: int
    notes: NotRequired[str]
    registered_at: NotRequired[int]


def job_id_for(rollout_id: str, device_id: str) -> str:
    # `@` is in neither a rollout id nor a device id: the rollout is found from the job id alone.
    return f"{rollout_id}@{device_id}"


def rollout_of(job_id: str) -> str | None:
    """The rollout id inside a job id (`<rollout>@<device>[#rb]`), None when it is not one."""
    rid, sep, device = job_id.partition("@")
    return rid if sep and ro.NAME_RE.fullmatch(rid) and device else None


@dataclass(frozen=True)
class Rollout:
    """A rollout's meta hash, parsed. `rev` is the compare-and-set revision of every transition."""

    rid: str
    cfg: ro.RolloutConfig
    release: Release
    state: str
    stage: int
    opened_at: float
    reason: str
    rev: str
    tokens: float
    tokens_at: float

    @classmethod
    def from_meta(cls, rid: str, meta: dict[str, str]) -> Rollout:
        return cls(rid, ro.RolloutConfig.from_json(json.loads(meta["config"])), json.loads(meta["release"]),
                   meta["state"], int(meta["stage"]), float(meta["opened_at"]), meta.get("reason", ""),
                   meta["rev"], float(meta.get("tokens", 0)), float(meta.get("tokens_at", 0)))

    def after(self, rev: int, state: str, reason: str, stage: int | None = None,
              opened_at: float | None = None) -> Rollout:
        """This rollout once a transition stored as revision `rev` (what a reload would read)."""
        return replace(self, rev=str(rev), state=state, reason=reason,
                       stage=self.stage if stage is None else stage,
                       opened_at=self.opened_at if opened_at is None else opened_at)


@dataclass(frozen=True)
class DeviceRecord:
    """One device inside a rollout (or its rollback: the `rb:` keys). Times are Unix seconds."""

    state: ro.JobState
    bucket: int = 0
    hw: str = ""
    fw_before: str = ""  # the version the device ran when taken in (what a rollback returns to)
    job_id: str | None = None
    issued_at: int | None = None
    in_progress_at: int | None = None
    decided_at: int | None = None
    already: bool = False  # already on the rollout's version when taken in: succeeded, no job

    # Stored as compact JSON with these keys; the Lua scripts (rollout_scripts) use them.
    _KEYS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("state", "s"), ("job_id", "j"), ("bucket", "b"), ("hw", "h"), ("fw_before", "f"),
        ("issued_at", "t"), ("in_progress_at", "p"), ("decided_at", "d"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"s": str(self.state), "b": self.bucket, "h": self.hw, "f": self.fw_before}
        for name, key in self._KEYS:
            value = getattr(self, name)
            if key not in out and value is not None:
                out[key] = value
        if self.already:
            out["a"] = 1
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DeviceRecord:
        values = {name: raw[key] for name, key in cls._KEYS if key in raw}
        values["state"] = ro.JobState(raw["s"])
        values["already"] = bool(raw.get("a"))
        for name in ("hw", "fw_before"):
            values[name] = values.get(name) or ""
        return cls(**values)
