"""The rollout state machine, pure: configuration, buckets, stages and gates (PROTOCOL §3).

Nothing here touches Redis or MQTT. `planner.py` feeds it counts and a clock and stores
what it decides before publishing it.
"""

from __future__ import annotations

import hashlib
import itertools
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from daemons.protocol.errors import Rejected
from daemons.protocol.messages import DEVICE_ID_RE
from daemons.protocol.selector import Selector, SelectorError, parse_selector

# A rollout id and a release version become MQTT topic levels and Redis key parts.
# Rollout ids and versions follow the device-id rule: they become MQTT topic levels too.
NAME_RE = DEVICE_ID_RE


class RolloutState(StrEnum):
    """A rollout's state (PROTOCOL §3); the value is what status, events and Redis carry."""

    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    ABORTED = "aborted"
    COMPLETED = "completed"


class JobState(StrEnum):
    """A device's job inside a rollout (AWS IoT Jobs names, lower-cased, where there is one).

    The values are those of the status counts and of the Lua scripts (rollout_scripts).
    """

    PENDING = "pending"          # in an open stage, waiting for the rate limit
    ISSUED = "issued"            # job published, nothing heard yet (AWS: QUEUED)
    IN_PROGRESS = "in_progress"  # downloading / verifying / rebooting
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    WITHDRAWN = "withdrawn"      # job taken back before the device started it (halt/abort)


RUNNING, PAUSED, HALTED, ABORTED, COMPLETED = RolloutState
ROLLOUT_STATES = tuple(RolloutState)
ACTIVE = (RUNNING, PAUSED)

PENDING, ISSUED, IN_PROGRESS, SUCCEEDED, FAILED, ROLLED_BACK, REJECTED, TIMED_OUT, WITHDRAWN = JobState
DEVICE_STATES = tuple(JobState)
FAILURES = (FAILED, ROLLED_BACK, REJECTED, TIMED_OUT)
TERMINAL = (SUCCEEDED, *FAILURES, WITHDRAWN)
OPEN = (PENDING, ISSUED, IN_PROGRESS)

# What a device's `{p}/{id}/ota/status` state means for its job.
REPORTED = {
    "downloading": IN_PROGRESS, "verifying": IN_PROGRESS, "rebooting": IN_PROGRESS,
    "succeeded": SUCCEEDED, "failed": FAILED, "rolled_back": ROLLED_BACK, "rejected": REJECTED,
}

BUCKET_SCALE = 10_000  # buckets are kept as integers: bucket / 100 is the percentage in [0, 100)


class RolloutError(Rejected):
    """A command that cannot be applied; `code` is the §0 error code."""


def bucket(rollout_id: str, device_id: str) -> int:
    """The device's fixed place in [0, 10000): stage k holds buckets below stages[k] * 100."""
    digest = hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKET_SCALE


def threshold(stages: tuple[float, ...], stage: int) -> int:
    return round(stages[stage] * BUCKET_SCALE / 100)


def in_stage(bucket_value: int, stages: tuple[float, ...], stage: int) -> bool:
    return bucket_value < threshold(stages, stage)


def _number(body: Mapping[str, Any], name: str, default: float | None, lo: float, hi: float,
            integer: bool = False) -> float:
    value = body.get(name, default)
    if value is None:
        raise RolloutError(400, f"{name} is required")
    wrong_type = integer and not isinstance(value, int)
    if isinstance(value, bool) or not isinstance(value, int | float) or wrong_type:
        raise RolloutError(400, f"{name} must be {'an integer' if integer else 'a number'}")
    if not lo <= value <= hi:
        raise RolloutError(400, f"{name} must be between {lo:g} and {hi:g}")
    return value


@dataclass(frozen=True)
class RolloutConfig:
    """What `create` asked for, validated. Stored as JSON; never changes afterwards."""

    version: str
    stages: tuple[float, ...] = (1, 5, 20, 100)
    soak_s: int = 600
    success_pct: float = 95
    max_failure_pct: float = 2
    min_devices_for_gate: int = 20
    timeout_s: int = 1800
    rate_per_min: int | None = None
    selector: Selector = field(default_factory=Selector)
    # Extensions: the health gate, and how long a job (manifest and URL) stays valid.
    health_margin: float = 15
    health_min_devices: int = 3
    job_expiry_s: int = 86_400

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> RolloutConfig:
        version = body.get("version")
        if not isinstance(version, str) or not NAME_RE.fullmatch(version):
            raise RolloutError(400, "version must be a release version string")
        try:
            selector = parse_selector(body.get("selector"))
        except SelectorError as exc:
            raise RolloutError(exc.code, exc.message) from None
        stages = body.get("stages", [1, 5, 20, 100])
        if not isinstance(stages, list) or not 1 <= len(stages) <= 20:
            raise RolloutError(400, "stages must be a list of 1 to 20 percentages")
        for s in stages:
            if isinstance(s, bool) or not isinstance(s, int | float) or not 0 < s <= 100:
                raise RolloutError(400, "each stage must be a percentage in (0, 100]")
        if any(b <= a for a, b in itertools.pairwise(stages)):
            raise RolloutError(400, "stages must grow strictly: a stage never shrinks")
        rate = body.get("rate_per_min")
        return cls(
            version=version,
            stages=tuple(stages),
            soak_s=int(_number(body, "soak_s", 600, 0, 30 * 86_400, integer=True)),
            success_pct=_number(body, "success_pct", 95, 0, 100),
            max_failure_pct=_number(body, "max_failure_pct", 2, 0, 100),
            min_devices_for_gate=int(_number(body, "min_devices_for_gate", 20, 1, 10_000_000, integer=True)),
            timeout_s=int(_number(body, "timeout_s", 1800, 1, 30 * 86_400, integer=True)),
            rate_per_min=None if rate is None else int(_number(body, "rate_per_min", None, 1, 10_000_000,
                                                               integer=True)),
            selector=selector,
            health_margin=_number(body, "health_margin", 15, 0, 100),
            health_min_devices=int(_number(body, "health_min_devices", 3, 1, 1_000_000, integer=True)),
            job_expiry_s=int(_number(body, "job_expiry_s", 86_400, 60, 7 * 86_400, integer=True)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "stages": list(self.stages), "soak_s": self.soak_s,
            "success_pct": self.success_pct, "max_failure_pct": self.max_failure_pct,
            "min_devices_for_gate": self.min_devices_for_gate, "timeout_s": self.timeout_s,
            "rate_per_min": self.rate_per_min, "selector": self.selector.to_json(),
            "health_margin": self.health_margin, "health_min_devices": self.health_min_devices,
            "job_expiry_s": self.job_expiry_s,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RolloutConfig:
        return cls.parse({k: v for k, v in raw.items() if v is not None})


@dataclass(frozen=True)
class Counts:
    """Devices per state among those a rollout has taken in (every open stage)."""

    by_state: Mapping[str, int]

    def get(self, state: str) -> int:
        return max(0, int(self.by_state.get(state, 0)))

    @property
    def total(self) -> int:
        return sum(self.get(s) for s in DEVICE_STATES)

    @property
    def failed(self) -> int:
        return sum(self.get(s) for s in FAILURES)

    @property
    def decided(self) -> int:
        return self.get(SUCCEEDED) + self.failed

    @property
    def open(self) -> int:
        return sum(self.get(s) for s in OPEN)

    def public(self) -> dict[str, int]:
        return {s.value: self.get(s) for s in DEVICE_STATES}  # plain str keys: codecs refuse enum keys


@dataclass(frozen=True)
class GateVerdict:
    """A transition the gates ask for: `halt`, `advance` (open the next stage) or `complete`."""

    action: str
    reason: str


def failure_gate(cfg: RolloutConfig, counts: Counts) -> GateVerdict | None:
    decided = counts.decided
    if decided < cfg.min_devices_for_gate or decided == 0:
        return None
    share = 100.0 * counts.failed / decided
    if share > cfg.max_failure_pct:
        return GateVerdict("halt", f"failure gate: {counts.failed} of {decided} decided devices failed "
                               f"({share:.1f}% > {cfg.max_failure_pct:g}%)")
    return None


def stage_gate(cfg: RolloutConfig, stage: int, opened_at: float, counts: Counts,
               now: float) -> GateVerdict | None:
    """Advance (or complete) when the stage's success share and soak time are both reached."""
    total = counts.get(SUCCEEDED) + counts.failed + counts.open
    share = 100.0 if total == 0 else 100.0 * counts.get(SUCCEEDED) / total
    last = stage == len(cfg.stages) - 1
    if share >= cfg.success_pct:
        if now - opened_at < cfg.soak_s:
            return None
        what = "completed" if last else f"stage {stage + 1} opens"
        return GateVerdict("complete" if last else "advance",
                       f"stage {stage} ({cfg.stages[stage]:g}%): {share:.1f}% succeeded, "
                       f"soaked {cfg.soak_s}s; {what}")
    if counts.open == 0 and total > 0:
        # Every device of the stage is decided and the gate can no longer be reached.
        return GateVerdict("halt", f"success gate: stage {stage} ended with {share:.1f}% succeeded "
                               f"(< {cfg.success_pct:g}%)")
    return None


def health_gate(cfg: RolloutConfig, updated: Mapping[str, list[float]],
                baseline: Mapping[str, list[float]]) -> GateVerdict | None:
    """Halt when, in some hw cohort, the updated devices' median health score is worse than the
    median of the cohort's not-yet-updated devices by more than `health_margin` points."""
    for cohort in sorted(updated):
        new, old = updated[cohort], baseline.get(cohort, [])
        if len(new) < cfg.health_min_devices or len(old) < cfg.health_min_devices:
            continue
        new_med, old_med = statistics.median(new), statistics.median(old)
        if old_med - new_med > cfg.health_margin:
            return GateVerdict("halt", f"health gate: hw {cohort}: updated devices' median score "
                                   f"{new_med:.0f} vs {old_med:.0f} for the rest of the cohort "
                                   f"(margin {cfg.health_margin:g}, {len(new)} updated)")
    return None


def rate_allowance(rate_per_min: int | None, tokens: float, last: float, now: float,
                   burst: float | None = None) -> float:
    """Token bucket: how many jobs may go out now. Unlimited when no rate is set."""
    if rate_per_min is None:
        return float("inf")
    cap = burst if burst is not None else max(1.0, rate_per_min / 60.0)
    return min(cap, tokens + max(0.0, now - last) * rate_per_min / 60.0)


# Which commands each rollout state accepts, and where they lead.
COMMANDS: dict[str, dict[str, str]] = {
    "pause": {RUNNING: PAUSED},
    "resume": {PAUSED: RUNNING},
    "abort": {RUNNING: ABORTED, PAUSED: ABORTED, HALTED: ABORTED},
    "advance": {RUNNING: RUNNING, PAUSED: PAUSED},
    "rollback": {HALTED: HALTED, ABORTED: ABORTED},
}


def command_target(action: str, state: str, stage: int, stages: int) -> str:
    """The state a command leads to, or RolloutError (400 unknown action, 409 wrong state)."""
    if action not in COMMANDS:
        raise RolloutError(400, f"unknown action {action!r}: expected create, pause, resume, abort, "
                                "advance or rollback")
    target = COMMANDS[action].get(state)
    if target is None:
        raise RolloutError(409, f"cannot {action} a rollout that is {state}")
    if action == "advance" and stage >= stages - 1:
        raise RolloutError(409, "already at the last stage")
    return target
