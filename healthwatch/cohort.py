"""Cohort baselines: per (hw, fw), the median and MAD of the devices' current levels.

Every device contributes its smoothed levels (temperature, battery drain rate, RSSI, free heap). The
statistics are recomputed per cohort when the heartbeat time has moved `refresh_s` past the last
refresh, or when the cohort has grown by a quarter (so a young fleet gets a baseline within minutes).
Refreshing on the heartbeats' own ts keeps replays deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

# Order of the levels a device contributes.
METRICS = ("temp", "drain", "rssi", "heap")
Levels = tuple[float | None, float | None, float | None, float | None]


def cohort_key(hw: str | None, fw: str | None) -> str:
    return f"{hw or '?'}|{fw or '?'}"


@dataclass(frozen=True, slots=True)
class MetricStats:
    median: float
    mad: float
    n: int


class CohortStats:
    __slots__ = ("metrics", "n")

    def __init__(self, metrics: tuple[MetricStats | None, ...], n: int) -> None:
        self.metrics = metrics
        self.n = n


EMPTY = CohortStats((None, None, None, None), 0)


def _stats(values: list[float], min_members: int) -> MetricStats | None:
    if len(values) < min_members:
        return None
    med = median(values)
    return MetricStats(med, median([abs(v - med) for v in values]), len(values))


class CohortTable:
    def __init__(self, refresh_s: float = 300.0, min_members: int = 5) -> None:
        self.refresh_s = refresh_s
        self.min_members = min_members
        self.members: dict[str, dict[str, Levels]] = {}
        self.stats: dict[str, CohortStats] = {}
        self._refreshed_at: dict[str, float] = {}
        self._size_at_refresh: dict[str, int] = {}

    def get(self, key: str) -> CohortStats:
        return self.stats.get(key, EMPTY)

    def update(self, key: str, device_id: str, levels: Levels, ts: float) -> None:
        members = self.members.get(key)
        if members is None:
            members = self.members[key] = {}
        members[device_id] = levels
        if (ts - self._refreshed_at.get(key, -1e18) >= self.refresh_s
                or len(members) * 4 >= self._size_at_refresh.get(key, 0) * 5 + 4):
            self.refresh(key, ts)

    def remove(self, key: str, device_id: str) -> None:
        members = self.members.get(key)
        if members is not None:
            members.pop(device_id, None)

    def load(self, key: str, levels: dict[str, Levels]) -> None:
        """Merge levels read from the shared store (devices scored by other replicas)."""
        self.members.setdefault(key, {}).update(levels)

    def refresh(self, key: str, ts: float) -> None:
        members = list(self.members.get(key, {}).values())
        self.stats[key] = CohortStats(tuple(
            _stats([lv[i] for lv in members if lv[i] is not None], self.min_members)  # type: ignore[misc]
            for i in range(len(METRICS))), len(members))
        self._refreshed_at[key] = ts
        self._size_at_refresh[key] = len(members)

    def medians(self) -> dict[str, dict[str, float | int]]:
        """Per cohort: member count and the median of each metric (for the summary)."""
        out: dict[str, dict[str, float | int]] = {}
        for key, st in self.stats.items():
            row: dict[str, float | int] = {"devices": len(self.members.get(key, {}))}
            for name, m in zip(METRICS, st.metrics, strict=True):
                if m is not None:
                    row[name] = round(m.median, 3)
            out[key] = row
        return out
