"""`python -m healthwatch` / `fleet-healthwatch`."""

from __future__ import annotations

import sys
from typing import Any

from prometheus_client import Gauge, Histogram

from daemons.protocol.messages import Outcome
from daemons.runtime.app import run_daemon
from daemons.runtime.config import Settings
from daemons.runtime.logs import get_logger
from daemons.runtime.metrics import DaemonMetrics
from healthwatch.detect import Tuning
from healthwatch.service import HealthService
from healthwatch.status import STATUSES
from healthwatch.store import HealthStore

TOP_COHORTS = 8  # cohort label values: the largest cohorts, the rest summed as "other"


class InstrumentedHealthService(HealthService):
    """The service plus gauges read by Prometheus; labels are bounded, never a device id."""

    def __init__(self, metrics: DaemonMetrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        r = metrics.registry
        self.g_status = Gauge("fleet_health_devices", "Devices per health status", ["status"], registry=r)
        self.g_reason = Gauge("fleet_health_reasons", "Devices per active reason", ["reason"], registry=r)
        self.g_cohort = Gauge("fleet_health_cohort_devices", "Devices per cohort (hw|fw), largest first",
                              ["cohort"], registry=r)
        lag = Histogram("fleet_heartbeat_lag_seconds",
                        "From a heartbeat's ts (device clock) to its arrival at healthwatch", registry=r,
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900))
        # Clocks of devices drift: a negative lag (device ahead) counts as 0.
        self.on_lag = lambda seconds: lag.observe(max(0.0, seconds))
        self._reasons_seen: set[str] = set()
        self._cohorts_seen: set[str] = set()

    def tick(self, now: float) -> Outcome:
        out = super().tick(now)
        s = self.last_summary
        if s:
            for status in STATUSES:
                self.g_status.labels(status).set(s["counts"].get(status, 0))
            reasons = s.get("reasons", {})
            for code in self._reasons_seen | set(reasons):
                self.g_reason.labels(code).set(reasons.get(code, 0))
            self._reasons_seen |= set(reasons)
        sizes = sorted(((len(m), k) for k, m in self.engine.cohorts.members.items()), reverse=True)
        shown = {k: n for n, k in sizes[:TOP_COHORTS]}
        shown["other"] = sum(n for n, _ in sizes[TOP_COHORTS:])
        for key in self._cohorts_seen | set(shown):
            self.g_cohort.labels(key).set(shown.get(key, 0))
        self._cohorts_seen |= set(shown)
        return out


def build(settings: Settings, redis: Any, metrics: DaemonMetrics) -> HealthService:
    tuning = Tuning(interval_s=float(settings.heartbeat_interval_s))
    store = HealthStore(redis)
    moved = store.migrate_legacy_keys()  # fleet:hw:* -> fleet:health:* (the prefix before issue 8)
    if moved:
        get_logger("healthwatch").info("migrated_keys", moved=moved, from_prefix="fleet:hw:")
    return InstrumentedHealthService(metrics, store, settings.topic_prefix, settings.ops_prefix, tuning)


def main(argv: list[str] | None = None) -> int:
    return run_daemon("healthwatch", build, argv)


if __name__ == "__main__":
    sys.exit(main())
