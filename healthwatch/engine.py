"""The scoring engine: validation, cohorts and per-device detectors, all in memory and pure.

The daemon loads the states of a batch from Redis, runs them through `score`, and writes them back;
the evaluation runs the same engine on simulated fleets.
"""

from __future__ import annotations

from typing import Any

from healthwatch.cohort import CohortTable, cohort_key
from healthwatch.detect import Tuning
from healthwatch.device import LATE, NEW, DeviceState, Verdict, arrival, fill, observe, offline_verdict
from healthwatch.validate import validate

REPUBLISH_S = 300.0  # refresh the retained health at least this often (heartbeat time)


class HealthEngine:
    def __init__(self, tuning: Tuning | None = None, cohorts: CohortTable | None = None) -> None:
        self.tuning = tuning or Tuning()
        self.cohorts = cohorts or CohortTable()
        self.last_arrival = NEW  # what the last `score` call saw: new, late or duplicate

    def score(self, st: DeviceState, device_id: str, body: dict[str, Any], now: float
              ) -> tuple[Verdict | None, list[str]]:
        """Fold one heartbeat into `st`. Returns (verdict, dropped fields).

        The verdict is None for a heartbeat that is not the newest (`self.last_arrival` says
        whether it was late or a duplicate; see healthwatch.device for what a late one does).
        """
        hb, dropped = validate(body)
        self.last_arrival = arrival(st, hb)
        if self.last_arrival != NEW:
            if self.last_arrival == LATE:
                fill(st, hb, self.tuning)
            return None, dropped
        old_key = cohort_key(st.hw, st.fw) if st.n else None
        key = cohort_key(hb.get("hw", st.hw), hb.get("fw", st.fw))
        verdict = observe(st, hb, self.cohorts.get(key), self.tuning, now)
        if old_key is not None and old_key != key:
            self.cohorts.remove(old_key, device_id)
        self.cohorts.update(key, device_id, st.levels(), st.ts)
        return verdict, dropped

    def offline(self, st: DeviceState, now: float) -> Verdict:
        return offline_verdict(st, now, self.tuning)

    def is_offline(self, st: DeviceState, now: float) -> bool:
        return st.status != 3 and now - st.wall >= self.tuning.offline_after * self.tuning.interval_s

    @staticmethod
    def should_publish(st: DeviceState, verdict: Verdict) -> bool:
        """Publish the retained health when it says something new, and refresh it now and then."""
        sig = f"{verdict.status}|{verdict.score}|{','.join(r['code'] for r in verdict.reasons)}"
        if sig != st.pub_sig or verdict.ts - st.pub_ts >= REPUBLISH_S:
            st.pub_sig = sig
            st.pub_ts = verdict.ts
            return True
        return False
