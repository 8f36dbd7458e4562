"""ota-planner's handler: decoded messages and a store in, what to publish out (PROTOCOL §3).

Inbound: operator requests, device progress (`{p}/+/ota/status`), and what tells the planner
which devices exist and how they fare (`{p}/+/heartbeat`, `{p}/+/status`, `{p}/+/health`), so it
works with or without shadow-sync feeding the registry. Periodic work (gates, timeouts, stage
advance, rate-limited issuing) runs in `tick`, per rollout, on the replica holding its lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemons.protocol.messages import Inbound, Outcome, Refused
from daemons.registry import Registry
from daemons.runtime.logs import OncePerKey, get_logger
from otaplanner import aws_jobs
from otaplanner import rollout as ro
from otaplanner.artifacts import ArtifactStore
from otaplanner.commands import Commands
from otaplanner.control import Control
from otaplanner.door import DeviceMessage, Door, Dropped, OperatorRequest
from otaplanner.jobs import JobFactory
from otaplanner.records import rollout_of
from otaplanner.rollout_store import RolloutStore


@dataclass
class Sighting:
    """What a batch says about one device: the encoding it last used, its hw and fw if it said."""

    encoding: str
    hw: str | None = None
    fw: str | None = None


class Planner:
    tick_interval_s = 0.5

    def __init__(self, store: RolloutStore, registry: Registry, jobs: JobFactory, artifacts: ArtifactStore,
                 prefix: str = "fleet", ops_prefix: str = "fleetops", owner: str = "otaplanner",
                 clock: Callable[[], float] = time.time, **control_options: Any) -> None:
        self.store = store
        self.registry = registry
        self.prefix = prefix
        self.ops = ops_prefix
        self.clock = clock
        self.control = Control(store, registry, jobs, prefix, ops_prefix, owner, **control_options)
        self.commands = Commands(self.control, artifacts)
        self.door = Door(prefix, ops_prefix)
        self.log = get_logger("otaplanner")
        self._once = OncePerKey()
        self._timeouts: dict[str, int] = {}
        # The AWS IoT Jobs device API, where the prefix is AWS's own (otaplanner.aws_jobs).
        self.aws = aws_jobs.AwsJobs(store, prefix, self._apply_report) if aws_jobs.serves(prefix) else None

    def topics(self) -> list[str]:
        return [*self.door.topics(), *(self.aws.topics() if self.aws else [])]

    def tick(self, now: float) -> Outcome:
        out = Outcome()
        now = self.clock()
        self.control.reporter.mark_sent()
        active = self.store.active()
        for rid in active:
            self.control.tick(rid, now, out)
        for rid in self.store.trailing():
            if rid not in active:
                self.control.trail(rid, now, out)
        if self.aws:
            self.aws.notify(out, now)
        return out

    # -- batches ---------------------------------------------------------------------------------

    def handle(self, batch: list[Inbound]) -> Outcome:
        out = Outcome()
        now = self.clock()
        seen: dict[str, Sighting] = {}
        touched: set[str] = set()
        health: dict[str, tuple[float, float]] = {}
        for message in batch:
            request = self.aws.route(message.topic) if self.aws else None
            if self.aws and request:
                rid, said = self.aws.handle(*request, message.payload, now, out)
                self._sighted(seen, request[0], "json", said)
                if rid:
                    touched.add(rid)
                continue
            routed = self.door.route(message, now)
            if isinstance(routed, Refused):
                routed.reply.reject(out, routed.error)
            elif isinstance(routed, OperatorRequest):
                handle = self.commands.register if routed.kind == "register" else self.commands.command
                out.extend(handle(routed))
            elif isinstance(routed, Dropped):
                out.count(routed.kind, routed.result)
                if routed.topic is not None and self._once.first(routed.topic[:200]):
                    self.log.warning("dropped", reason=routed.result, topic=routed.topic[:200])
            else:
                rid = self._device(routed, seen, health, now, out)
                if rid:
                    touched.add(rid)
        self._observe(seen)
        self.store.put_health(health)
        # The next tick publishes their status, from the replica that holds each rollout's lease.
        self.store.trail(touched)
        if self.aws:
            self.aws.notify(out, now)
        return out

    def _device(self, m: DeviceMessage, seen: dict[str, Sighting], health: dict[str, tuple[float, float]],
                now: float, out: Outcome) -> str | None:
        """One device message; the rollout it touched, if any."""
        # What the device itself sent: not the health (healthwatch's) nor its Last Will (the broker's).
        if m.kind != "health" and not (m.kind == "status" and m.body.get("online") is False):
            self._sighted(seen, m.device_id, m.encoding, m.body)
        if m.kind == "ota/status":
            return self._report(m.device_id, m.body, now, out)
        if m.kind == "health":
            score = m.body.get("score")
            if isinstance(score, int | float) and not isinstance(score, bool) and 0 <= score <= 100:
                health[m.device_id] = (float(score), now)
                out.count("health", "seen")
            else:
                out.count("health", "malformed")
        else:
            out.count(m.kind, "seen")
        return None

    @staticmethod
    def _sighted(seen: dict[str, Sighting], device_id: str, encoding: str, body: dict[str, Any]) -> None:
        sighting = seen.setdefault(device_id, Sighting(encoding))
        sighting.encoding = encoding
        for name in ("hw", "fw"):
            value = body.get(name)
            if isinstance(value, str) and 0 < len(value) <= 64:
                setattr(sighting, name, value)

    def _observe(self, seen: dict[str, Sighting]) -> None:
        """Feed the registry (which devices exist, their hw/fw) and remember each device's encoding."""
        before = self.registry.record(
            {d: (s.hw, s.fw, s.encoding) for d, s in seen.items()})
        for device_id, old in before.items():
            if old.hw is None and (old.fw is None or seen[device_id].hw):
                self.control.issuer.device_news(device_id)

    def _report(self, device_id: str, body: dict[str, Any], now: float, out: Outcome) -> str | None:
        return self._apply_report(device_id, body, now, out)[0]

    def _apply_report(self, device_id: str, body: dict[str, Any], now: float,
                      out: Outcome) -> tuple[str | None, str]:
        """A §3 progress report: (rollout touched or None, previous state or why nothing changed)."""
        job_id, state = body.get("job_id"), body.get("state")
        rid = rollout_of(job_id) if isinstance(job_id, str) and len(job_id) <= 200 else None
        if rid is None or not isinstance(state, str) or state not in ro.REPORTED:
            out.count("ota_status", "malformed")
            return None, "malformed"
        timeout = self._timeouts.get(rid)
        if timeout is None:
            r = self.control.load(rid)
            if r is None:
                out.count("ota_status", "unknown_job")
                return None, "unknown_job"
            timeout = self._timeouts[rid] = r.cfg.timeout_s
        assert isinstance(job_id, str)
        new = ro.REPORTED[state]
        kind = "rb:" if job_id.endswith("#rb") else ""  # a rollback job (otaplanner.rollback)
        old = self.store.report(rid, device_id, job_id, new, now, timeout, kind)
        if old in ("nojob", "terminal", "same"):
            out.count("ota_status", old)
            return None, old
        if old.startswith("{"):
            # A terminal report after the timeout replaced `timed_out` (PROTOCOL §3): the gates
            # count it from now on, the registry takes its `fw` (handle), the event says so.
            self.control.reporter.publish_event(rid, json.loads(old), out)
            out.count("ota_status", "late")
            self.log.info("late_report", rollout_id=rid, device_id=device_id, state=state)
        out.count("ota_status", state)
        if new in ro.TERMINAL:
            # The job is over: clear the retained job so the device does not see it again.
            self.control.issuer.clear_jobs({device_id: job_id}, out)
            if new != ro.SUCCEEDED:
                self.log.info("job_failed", rollout_id=rid, device_id=device_id, state=state,
                              error=str(body.get("error", ""))[:200])
        return rid, old
