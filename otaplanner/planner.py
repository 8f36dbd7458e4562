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
from typing import Any

from daemons.protocol.codec import CodecError, decode
from daemons.protocol.messages import Inbound, Outcome, device_topic, valid_device_id
from daemons.registry import Registry, device_key
from daemons.runtime.logs import OncePerKey, get_logger
from otaplanner import rollout as ro
from otaplanner.commands import Commands
from otaplanner.control import Control, rollout_of
from otaplanner.jobs import JobFactory
from otaplanner.rollout_store import RolloutStore

DEVICE_TOPICS = ("heartbeat", "status", "ota/status", "health")


class Planner:
    tick_interval_s = 0.5

    def __init__(self, store: RolloutStore, registry: Registry, jobs: JobFactory, artifacts: Any,
                 prefix: str = "fleet", ops_prefix: str = "fleetops", owner: str = "otaplanner",
                 clock: Callable[[], float] = time.time, **control_options: Any) -> None:
        self.store = store
        self.registry = registry
        self.prefix = prefix
        self.ops = ops_prefix
        self.clock = clock
        self.control = Control(store, registry, jobs, prefix, ops_prefix, owner, **control_options)
        self.commands = Commands(self.control, artifacts)
        self.log = get_logger("otaplanner")
        self._once = OncePerKey()
        self._timeouts: dict[str, int] = {}

    def topics(self) -> list[str]:
        return [f"{self.ops}/ota/releases/register", f"{self.ops}/ota/rollouts/+/command",
                *(f"{self.prefix}/+/{t}" for t in DEVICE_TOPICS)]

    def tick(self, now: float) -> Outcome:
        out = Outcome()
        now = self.clock()
        self.control.mark_sent()
        active = self.store.active()
        for rid in active:
            self.control.tick(rid, now, out)
        for rid in self.store.trailing():
            if rid not in active:
                self.control.trail(rid, now, out)
        return out

    # -- batches ---------------------------------------------------------------------------------

    def handle(self, batch: list[Inbound]) -> Outcome:
        out = Outcome()
        now = self.clock()
        seen: dict[str, dict[str, Any]] = {}
        touched: set[str] = set()
        health: dict[str, tuple[float, float]] = {}
        for message in batch:
            topic = message.topic
            if topic == f"{self.ops}/ota/releases/register":
                out.extend(self.commands.register(message.payload, now))
                continue
            rid = self._command_rollout(topic)
            if rid is not None:
                out.extend(self.commands.command(rid, message.payload, now))
                continue
            device_id, kind = self._device_route(topic)
            if device_id is None:
                out.count("message", "unknown" if kind == "unknown" else "bad_id")
                if self._once.first(topic[:200]):
                    self.log.warning("dropped", reason=kind, topic=topic[:200])
                continue
            if not message.payload:
                out.count(kind, "empty")  # a retained message being cleared
                continue
            try:
                # Devices' numbers are judged field by field (§2); only hw, fw and the job are read here.
                body, encoding = decode(message.payload, exact_numbers=False)
            except CodecError:
                out.count(kind, "malformed")
                continue
            # What the device itself sent: not the health (healthwatch's) nor its Last Will (the broker's).
            if kind != "health" and not (kind == "status" and body.get("online") is False):
                info = seen.setdefault(device_id, {})
                info["enc"] = encoding
                for name in ("hw", "fw"):
                    if isinstance(body.get(name), str) and 0 < len(body[name]) <= 64:
                        info[name] = body[name]
            if kind == "ota/status":
                rid = self._report(device_id, body, now, out)
                if rid:
                    touched.add(rid)
            elif kind == "health":
                score = body.get("score")
                if isinstance(score, int | float) and not isinstance(score, bool) and 0 <= score <= 100:
                    health[device_id] = (float(score), now)
                    out.count("health", "seen")
                else:
                    out.count("health", "malformed")
            else:
                out.count(kind, "seen")
        self._observe(seen)
        self.store.put_health(health)
        # The next tick publishes their status, from the replica that holds each rollout's lease.
        self.store.trail(touched)
        return out

    def _command_rollout(self, topic: str) -> str | None:
        head = f"{self.ops}/ota/rollouts/"
        if topic.startswith(head) and topic.endswith("/command"):
            rid = topic[len(head):-len("/command")]
            return rid if "/" not in rid else None
        return None

    def _device_route(self, topic: str) -> tuple[str | None, str]:
        split = device_topic(topic, self.prefix)
        if split is None:
            return None, "unknown"
        device_id, kind = split
        if kind not in DEVICE_TOPICS:
            return None, "unknown"
        if not valid_device_id(device_id):
            return None, "bad_id"
        return device_id, kind

    def _observe(self, seen: dict[str, dict[str, Any]]) -> None:
        """Feed the registry (which devices exist, their hw/fw) and remember each device's encoding."""
        if not seen:
            return
        old = self.registry.read_many(seen)
        pipe = self.store.redis.pipeline(transaction=False)
        for device_id, info in seen.items():
            before = old[device_id]
            if before.hw is None and (before.fw is None or info.get("hw")):
                self.control.device_news(device_id)
            self.registry.observe(pipe, before, info.get("hw"), info.get("fw"))
            pipe.hset(device_key(self.registry.ns, device_id), "enc", info["enc"])
        pipe.execute()

    def _report(self, device_id: str, body: dict[str, Any], now: float, out: Outcome) -> str | None:
        job_id, state = body.get("job_id"), body.get("state")
        rid = rollout_of(job_id) if isinstance(job_id, str) and len(job_id) <= 200 else None
        if rid is None or not isinstance(state, str) or state not in ro.REPORTED:
            out.count("ota_status", "malformed")
            return None
        timeout = self._timeouts.get(rid)
        if timeout is None:
            r = self.control.load(rid)
            if r is None:
                out.count("ota_status", "unknown_job")
                return None
            timeout = self._timeouts[rid] = r.cfg.timeout_s
        assert isinstance(job_id, str)
        new = ro.REPORTED[state]
        kind = "rb:" if job_id.endswith("#rb") else ""  # a rollback job (otaplanner.rollback)
        old = self.store.report(rid, device_id, job_id, new, now, timeout, kind)
        if old in ("nojob", "terminal", "same"):
            out.count("ota_status", old)
            return None
        if old.startswith("{"):
            # A terminal report after the timeout replaced `timed_out` (PROTOCOL §3): the gates
            # count it from now on, the registry takes its `fw` (handle), the event says so.
            self.control.publish_event(rid, json.loads(old), out)
            out.count("ota_status", "late")
            self.log.info("late_report", rollout_id=rid, device_id=device_id, state=state)
        out.count("ota_status", state)
        if new in ro.TERMINAL:
            # The job is over: clear the retained job so the device does not see it again.
            self.control.clear_jobs({device_id: job_id}, out)
            if new != ro.SUCCEEDED:
                self.log.info("job_failed", rollout_id=rid, device_id=device_id, state=state,
                              error=str(body.get("error", ""))[:200])
        return rid
