"""The health gate's inputs: updated devices' health scores against their cohort's (extension).

Scores come from healthwatch (`{p}/{id}/health`, kept in `ota:health`); only a score reported
after the device's update says something about the new firmware. The rule itself is
`otaplanner.rollout.health_gate`.
"""

from __future__ import annotations

from typing import Protocol

from daemons.registry import Registry
from otaplanner import rollout as ro
from otaplanner.records import DeviceRecord, Rollout


class HealthInputs(Protocol):
    """What the health gate reads from the rollout store (otaplanner.rollout_store.RolloutStore)."""

    def health(self) -> dict[str, tuple[float, float]]:
        """Device id -> (latest healthwatch score, when it was received)."""
        ...

    def records(self, rid: str) -> dict[str, DeviceRecord]: ...


class HealthGate:
    def __init__(self, store: HealthInputs, registry: Registry, interval_s: float = 1.0) -> None:
        self.store = store
        self.registry = registry
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def check(self, r: Rollout, now: float) -> ro.GateVerdict | None:
        """A halt verdict, or None (also between checks: at most one every `interval_s` per rollout)."""
        if now - self._last.get(r.rid, 0.0) < self.interval_s:
            return None
        self._last[r.rid] = now
        health = self.store.health()
        if not health:
            return None
        updated: dict[str, list[float]] = {}
        updated_ids: set[str] = set()
        for device_id, rec in self.store.records(r.rid).items():
            if rec.state != ro.SUCCEEDED or device_id not in health:
                continue
            score, at = health[device_id]
            # Only health reported after the update says something about the new firmware.
            if rec.already or at >= (rec.decided_at or 0):
                updated.setdefault(rec.hw, []).append(score)
                updated_ids.add(device_id)
        if not any(len(v) >= r.cfg.health_min_devices for v in updated.values()):
            return None
        others = [d for d in health if d not in updated_ids]
        baseline: dict[str, list[float]] = {}
        for device_id, info in self.registry.read_many(others).items():
            if info.fw != r.cfg.version and (info.hw or "") in updated:
                baseline.setdefault(info.hw or "", []).append(health[device_id][0])
        return ro.health_gate(r.cfg, updated, baseline)
