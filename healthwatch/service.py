"""healthwatch's topic handlers (PROTOCOL §2): heartbeats in; health, alerts and summary out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemons.protocol.codec import CodecError, decode
from daemons.protocol.messages import Inbound, Outcome, device_topic, valid_device_id
from daemons.runtime.logs import OncePerKey, get_logger
from healthwatch.cohort import cohort_key
from healthwatch.detect import Tuning
from healthwatch.device import DeviceState, Verdict
from healthwatch.engine import HealthEngine
from healthwatch.status import STATUSES, HealthStatus
from healthwatch.store import DeviceWrite, HealthStates

MAX_PAYLOAD = 16 * 1024
SUMMARY_EVERY_S = 10.0
COHORT_RELOAD_S = 60.0
SUMMARY_COHORTS = 20
MAX_CAS_ROUNDS = 50


@dataclass(frozen=True)
class Heartbeat:
    """A decoded `{p}/{id}/heartbeat` (PROTOCOL §2); fields are checked later, one by one."""

    device_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Dropped:
    """A message with nothing to score: why (a metric label), its topic and a detail for the log."""

    why: str
    topic: str
    detail: str = ""


def _count_keys(st: DeviceState) -> set[str]:
    return {f"status:{STATUSES[st.status]}"} | {f"reason:{r['code']}" for r in st.reasons}


class HealthService:
    tick_interval_s = 1.0

    def __init__(self, store: HealthStates, prefix: str = "fleet", ops_prefix: str = "fleetops",
                 tuning: Tuning | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.prefix = prefix
        self.ops = ops_prefix
        self.engine = HealthEngine(tuning)
        self.clock = clock
        self.log = get_logger("healthwatch")
        self._once = OncePerKey()
        self._summary_at = 0.0
        self._cohorts_at = 0.0
        self._dirty = True
        self.last_summary: dict[str, Any] = {}
        # Seconds from a heartbeat's `ts` to its arrival, for the metrics (__main__ sets it).
        self.on_lag: Callable[[float], None] | None = None

    def topics(self) -> list[str]:
        return [f"{self.prefix}/+/heartbeat"]

    def route(self, message: Inbound) -> Heartbeat | Dropped:
        """Decode once at the door. Heartbeats have no rejected topic (§2): a bad one is dropped."""
        split = device_topic(message.topic, self.prefix)
        if split is None or split[1] != "heartbeat" or not valid_device_id(split[0]):
            return Dropped("bad_id", message.topic)
        if len(message.payload) > MAX_PAYLOAD:
            return Dropped("too_large", message.topic)
        try:
            # Numbers are judged field by field by validate (§2), not refused with the heartbeat.
            body, _ = decode(message.payload, exact_numbers=False)
        except CodecError as exc:
            return Dropped("malformed", message.topic, str(exc))
        return Heartbeat(split[0], body)

    # -- heartbeats ----------------------------------------------------------------------------

    def handle(self, batch: list[Inbound]) -> Outcome:
        out = Outcome()
        now = self.clock()
        work: dict[str, list[dict[str, Any]]] = {}
        for message in batch:
            routed = self.route(message)
            if isinstance(routed, Dropped):
                self._drop(out, routed.why, routed.topic, routed.detail)
            else:
                work.setdefault(routed.device_id, []).append(routed.body)
                ts = routed.body.get("ts") if isinstance(routed.body, dict) else None
                if self.on_lag is not None and isinstance(ts, int | float) and not isinstance(ts, bool):
                    self.on_lag(now - ts)
        if not work:
            return out
        # Compare-and-set per device: a device another replica wrote meanwhile is scored again
        # from its new state; only the outcome of the write that applied is published.
        for _ in range(MAX_CAS_ROUNDS):
            writes, scored = self._score(work, now)
            raced = self.store.write(writes)
            for device_id, result in scored.items():
                if device_id not in raced:
                    out.extend(result)
            work = {i: work[i] for i in raced}
            if not work:
                return out
        raise RuntimeError(f"health write kept racing for {len(work)} devices")

    def _score(self, work: dict[str, list[dict[str, Any]]], now: float
               ) -> tuple[list[DeviceWrite], dict[str, Outcome]]:
        states = self.store.read(list(work))
        writes: list[DeviceWrite] = []
        scored: dict[str, Outcome] = {}
        for device_id, bodies in work.items():
            stored, rev = states[device_id]
            out = scored[device_id] = Outcome()
            st = stored or DeviceState()
            old_keys = _count_keys(st) if stored else set()
            old_cohort = cohort_key(st.hw, st.fw) if stored else None
            last: Verdict | None = None
            for body in bodies:
                verdict, dropped = self.engine.score(st, device_id, body, now)
                for name in dropped:
                    out.count("heartbeat_field", f"bad_{name}")
                if dropped and self._once.first(f"fields:{device_id}"):
                    self.log.warning("heartbeat_fields_dropped", device_id=device_id, fields=dropped)
                if verdict is None:
                    out.count("heartbeat", self.engine.last_arrival)  # late or duplicate
                    continue
                out.count("heartbeat", "partial" if dropped else "ok")
                if verdict.previous is not None:
                    self._alert(out, device_id, verdict)
                last = verdict
            if last is not None and self.engine.should_publish(st, last):
                out.publish(f"{self.prefix}/{device_id}/health", last.health(), retain=True)
            new_keys = _count_keys(st)
            counts = {k: 1 for k in new_keys - old_keys} | {k: -1 for k in old_keys - new_keys}
            if counts:
                self._dirty = True
            writes.append(DeviceWrite(device_id, st, cohort_key(st.hw, st.fw), old_cohort, counts, rev))
        return writes, scored

    def _drop(self, out: Outcome, why: str, topic: str, detail: str = "") -> None:
        # No rejected topic exists for heartbeats (§2): count, log once per topic, drop.
        out.count("heartbeat", why)
        if self._once.first(f"{why}:{topic[:200]}"):
            self.log.warning("heartbeat_dropped", reason=why, topic=topic[:200], detail=detail[:200])

    def _alert(self, out: Outcome, device_id: str, v: Verdict) -> None:
        out.publish(f"{self.ops}/health/alerts", {
            "device_id": device_id, "status": v.status, "previous": v.previous, "score": v.score,
            "reasons": v.reasons, "ts": v.ts})
        out.count("alert", v.status)
        self.log.info("health_changed", device_id=device_id, status=v.status, previous=v.previous,
                      reasons=[r["code"] for r in v.reasons])

    # -- timer ---------------------------------------------------------------------------------

    def tick(self, now: float) -> Outcome:
        out = Outcome()
        if now - self._cohorts_at >= COHORT_RELOAD_S:
            # Levels of the devices other replicas score (and, after a restart, of everyone).
            for key, levels in self.store.cohorts().items():
                self.engine.cohorts.load(key, levels)
            self._cohorts_at = now
        self._offline(now, out)
        if now - self._summary_at >= SUMMARY_EVERY_S and (self._dirty or now - self._summary_at >= 60):
            self._summary(now, out)
        return out

    def _offline(self, now: float, out: Outcome) -> None:
        t = self.engine.tuning
        ids = self.store.overdue(now - t.offline_after * t.interval_s)
        if not ids:
            return
        states = self.store.read(ids)
        writes = []
        results: dict[str, Outcome] = {}
        for device_id in ids:
            st, rev = states[device_id]
            if st is None or st.status == HealthStatus.OFFLINE:
                continue
            old_keys = _count_keys(st)
            verdict = self.engine.offline(st, now)
            new_keys = _count_keys(st)
            counts = {k: 1 for k in new_keys - old_keys} | {k: -1 for k in old_keys - new_keys}
            result = results[device_id] = Outcome()
            result.publish(f"{self.prefix}/{device_id}/health", verdict.health(), retain=True)
            st.pub_sig = ""
            self._alert(result, device_id, verdict)
            key = cohort_key(st.hw, st.fw)
            writes.append(DeviceWrite(device_id, st, key, key, counts, rev))
        self._dirty = True
        raced = self.store.write(writes, offline=True)
        for device_id, result in results.items():
            if device_id not in raced:
                out.extend(result)
        if raced:  # a heartbeat came in meanwhile: back on the timer, not offline
            self.store.requeue(sorted(raced))

    def _summary(self, now: float, out: Outcome) -> None:
        counts, worst = self.store.summary()
        by_status = {s: max(0, counts.get(f"status:{s}", 0)) for s in STATUSES}
        reasons = {k[7:]: v for k, v in counts.items() if k.startswith("reason:") and v > 0}
        cohorts = self.engine.cohorts.medians()
        top = sorted(cohorts, key=lambda k: -int(cohorts[k]["devices"]))[:SUMMARY_COHORTS]
        body = {
            "ts": int(now),
            "devices": sum(by_status.values()),
            "counts": by_status,
            "reasons": reasons,
            "worst": [{"device_id": d, "score": int(s)} for d, s in worst if s < 100],
            "cohorts": {k: cohorts[k] for k in top},
        }
        out.publish(f"{self.ops}/health/summary", body, retain=True)
        self.last_summary = body
        self._summary_at = now
        self._dirty = False
