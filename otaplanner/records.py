"""One rollout as the planner sees it: its meta record as loaded from the store, and job ids.

The store keeps these as Redis hash fields (otaplanner.rollout_store); this is their typed form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from otaplanner import rollout as ro


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
    release: dict[str, Any]
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
