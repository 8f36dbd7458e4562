"""The six steps `fleet up` plays, shown live with rich; every fact comes from the system's topics.

1. the fleet comes online (fresh `status` of every device, each one's shadow read, each one scored);
2. a fleet-wide desired change (`{o}/shadow/bulk`) converges: time to 99 % and 100 % of the online
   devices reporting the value back (`shadow/update/accepted`);
3. a good release canaries through its stages and completes (`{o}/ota/rollouts/+/status`);
4. a bad release (it fails its self-test on part of the devices) halts by itself in the first stage
   with its reason, and `rollback` returns the devices it had updated;
5. healthwatch flags the devices with injected faults, with the right reasons (`{p}/+/health`);
   which devices were made faulty comes from the simulator's published plan (`--plan`);
6. a debug link for one device streams its log lines (fleet-api's WebSocket).

Rollout stages are 1/5/20/100 %; in fleets under 1,000 devices they start at the first stage that
holds about ten devices (5 % of 200), else a canary of one or two devices decides nothing. Gates: success 80 %
(the injected faults include devices that die and never answer their job), failure 10 % with at
least 3 devices decided, a soak of two heartbeats per stage, and the health gate judging a cohort
once it has 10 updated devices (the injected faults hit updated and other devices alike: a median
of 4 updated devices with one faulty among them would halt a good release).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from daemons.cli import fleetctl
from daemons.cli.observe import Observer, stream_debug_lines
from daemons.cli.publish import publish
from daemons.runtime.config import load_settings

GOOD, BAD = "2.0.0", "2.1.0-bad"


@dataclass
class Step:
    number: int
    name: str
    ok: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


@dataclass
class Scenario:
    obs: Observer
    console: Console
    config: Path
    workdir: Path
    devices: int
    hw: list[str]
    interval: float
    plan: dict[str, dict[str, Any]]  # device id -> {"fault", "expect"}: the simulator's --plan
    stop: threading.Event
    log: list[str] = field(default_factory=list)  # every line said, in order
    live: Live | None = None

    # -- plumbing ------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A line of the story: printed above the live panel (plainly when not on a terminal)."""
        self.log.append(text)
        self.console.print(text, highlight=False)
        self._refresh()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.obs.panel(self.devices, "fleet"))

    def _wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            if self.obs.wait(pred, min(0.5, deadline - time.monotonic()), self.stop):
                return True
            self._refresh()
        return False

    def _request(self, topic: str, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        token = secrets.token_hex(6)
        self.obs.publish(topic, {**body, "clientToken": token})
        self._wait(lambda: token in self.obs.seen.answers, timeout)
        return self.obs.seen.answers.get(token, {"topic": "", "message": f"no answer on {topic}/accepted"})

    def run(self) -> list[Step]:
        steps: list[Step] = []
        with Live(self.obs.panel(self.devices, "fleet"), console=self.console,
                  refresh_per_second=4, transient=False) as live:
            self.live = live
            for number, (name, fn) in enumerate(self.steps(), 1):
                if self.stop.is_set():
                    break
                step = Step(number, name)
                self.say(f"[bold]({number}) {name}[/]")
                t0 = time.monotonic()
                try:
                    fn(step)
                except Exception as exc:  # a step that breaks is reported, the next one still runs
                    step.ok, step.summary = False, f"error: {exc}"
                step.facts["seconds"] = round(time.monotonic() - t0, 1)
                mark = "[green]ok[/]" if step.ok else "[red]FAILED[/]"
                self.say(f"    {mark} {step.summary}")
                steps.append(step)
            self.live = None
        return steps

    def steps(self) -> list[tuple[str, Callable[[Step], None]]]:
        return [("the fleet comes online", self.online),
                ("a fleet-wide desired change converges", self.converge),
                ("a good release canaries and completes", self.good_release),
                ("a bad release halts by itself; rollback returns its devices", self.bad_release),
                ("healthwatch flags the faulty devices", self.health),
                ("a debug link streams one device's logs", self.debug)]

    # -- (1) ---------------------------------------------------------------------------------------

    def online(self, step: Step) -> None:
        """Every device online, its shadow read (a get answered on connect: the observer subscribed
        before the fleet started, so none is missed) and scored by healthwatch. ok only when all
        three hold within their bounds; the summary gives each figure."""
        s = self.obs.seen
        n = self.devices
        t0 = time.monotonic()
        bound = max(60, n / 50)
        online = self._wait(lambda: len(s.ever_online) >= n, bound)
        step.facts.update(online=len(s.ever_online), devices=n, online_s=round(time.monotonic() - t0, 1))
        read = self._wait(lambda: len(s.shadow_read) >= n, max(10.0, bound - (time.monotonic() - t0)))
        scored = self._wait(lambda: len(s.health) >= n, 10 * self.interval + 10)
        step.facts.update(health_published=len(s.health), shadows_read=len(s.shadow_read))
        step.ok = online and read and scored
        step.summary = (f"{len(s.ever_online)} of {n} devices said online on their status topic "
                        f"in {step.facts['online_s']} s; {len(s.shadow_read)} of {n} shadows read; health "
                        f"published for {len(s.health)} of {n}")

    # -- (2) ---------------------------------------------------------------------------------------

    def converge(self, step: Step) -> None:
        s, value = self.obs.seen, 10 + secrets.randbelow(1000)
        t0 = time.monotonic()
        answer = self._request(f"{self.obs.o}/shadow/bulk",
                               {"selector": {}, "state": {"desired": {"sample_rate_s": value}}})
        matched = int(answer.get("matched", 0))

        def done() -> int:
            return sum(1 for d in s.online if s.reported.get(d, {}).get("sample_rate_s") == value)

        t99 = t100 = None
        while not self.stop.is_set() and time.monotonic() - t0 < max(60, 30 * self.interval):
            target = len(s.online)
            n = done()
            if t99 is None and n >= math.ceil(0.99 * target):
                t99 = time.monotonic() - t0
            if n >= target:
                t100 = time.monotonic() - t0
                break
            self._wait(lambda n=n, target=target: done() > n or len(s.online) != target, 1.0)  # type: ignore[misc]
        n = done()
        step.facts.update(matched=matched, converged=n, online=len(s.online),
                          t99_s=round(t99, 2) if t99 else None, t100_s=round(t100, 2) if t100 else None)
        step.ok = t100 is not None and matched >= n
        step.summary = (f"bulk matched {matched}; {n} online devices reported sample_rate_s={value}; "
                        f"99 % after {step.facts['t99_s']} s, 100 % after {step.facts['t100_s']} s")

    # -- (3), (4) ----------------------------------------------------------------------------------

    def _stages(self) -> list[int]:
        """1/5/20/100 %, starting at the first stage that holds about ten devices."""
        ladder = (1, 5, 20, 100)
        first = next(s for s in ladder if s == 100 or s * self.devices >= 1000)
        return [s for s in ladder if s >= first]

    def _release(self, version: str) -> None:
        image = self.workdir / f"fw-{version}.bin"
        image.write_bytes(secrets.token_bytes(64 * 1024))
        hw = [x for h in self.hw for x in ("--hw", h)]
        args = fleetctl.parser().parse_args(["release", "publish", str(image), "--version", version, *hw])
        publish(args, load_settings("fleetctl", str(self.config)))

    def _rollout(self, rid: str, version: str, step: Step) -> dict[str, Any]:
        """Create the rollout and follow its status until it is no longer running; the last status."""
        self._release(version)
        cfg = {"action": "create", "version": version, "stages": self._stages(),
               "soak_s": max(2, round(2 * self.interval)), "success_pct": 80, "max_failure_pct": 10,
               "min_devices_for_gate": 3, "timeout_s": 600, "health_min_devices": 10}
        answer = self._request(f"{self.obs.o}/ota/rollouts/{rid}/command", cfg)
        if not answer.get("topic", "").endswith("/accepted"):
            raise RuntimeError(f"create refused: {answer.get('message')}")
        seen_stages: list[int] = []
        rollouts = self.obs.seen.rollouts

        def moved() -> bool:
            r = rollouts.get(rid, {})
            return r.get("state") not in (None, "running") or (
                r.get("stage_pct") is not None and r.get("stage_pct") not in seen_stages)

        while not self.stop.is_set():
            if not self._wait(moved, 300):
                raise TimeoutError(f"rollout {rid} made no progress in 300 s")
            r = dict(rollouts[rid])
            if r.get("stage_pct") not in seen_stages:
                seen_stages.append(r["stage_pct"])
                self.say(f"    {rid}: stage {r['stage_pct']} % open ({r.get('reason')})")
            if r.get("state") != "running":
                step.facts.update(rollout=rid, version=version, state=r["state"], stages_seen=seen_stages,
                                  counts=r.get("counts"), reason=r.get("reason"))
                return r
        return {}

    def good_release(self, step: Step) -> None:
        r = self._rollout("canary-good", GOOD, step)
        step.ok = r.get("state") == "completed"
        step.summary = (f"{GOOD}: {r.get('state')} through stages {step.facts.get('stages_seen')} %, "
                        f"{r.get('counts', {}).get('succeeded')} devices succeeded")

    def bad_release(self, step: Step) -> None:
        r = self._rollout("canary-bad", BAD, step)
        halted = r.get("state") == "halted"
        status = self.obs.seen.rollouts

        def settled() -> bool:  # the devices that had started finish: their results count
            c = status.get("canary-bad", {}).get("counts", {})
            return bool(c.get("in_progress", 0) + c.get("issued", 0) == 0)

        self._wait(settled, 120)
        r = dict(status.get("canary-bad", r))
        updated = int(r.get("counts", {}).get("succeeded", 0))
        step.facts.update(halted_in_stage=r.get("stage", -1) + 1, updated=updated)
        self.say(f"    halted in stage {r.get('stage', -1) + 1}: {r.get('reason')}")
        answer = self._request(f"{self.obs.o}/ota/rollouts/canary-bad/command", {"action": "rollback"})
        rolled = 0
        if answer.get("topic", "").endswith("/accepted"):

            def back() -> int:
                return int(status.get("canary-bad", {}).get("rollback_counts", {}).get("succeeded", 0))

            self._wait(lambda: back() >= updated, 120)
            rolled = back()
            self.say(f"    rollback: {rolled} of {updated} updated devices back on {GOOD}")
        else:
            self.say(f"    rollback refused: {answer.get('message')}")
        on_good = sum(1 for st in list(self.obs.seen.ota.values())
                      if str(st.get("job_id", "")).endswith("#rb") and st.get("state") == "succeeded"
                      and st.get("fw") == GOOD)
        step.facts.update(rolled_back=rolled, rollback_devices_report_good=on_good)
        step.ok = halted and r.get("stage") == 0 and updated > 0 and rolled >= updated
        step.summary = (f"{BAD}: {r.get('state')} in stage {r.get('stage', -1) + 1} "
                        f"({r.get('reason')}); rollback returned {rolled} of {updated} devices to {GOOD}")

    # -- (5) ---------------------------------------------------------------------------------------

    def health(self, step: Step) -> None:
        s = self.obs.seen
        expected = {d: str(f["expect"]) for d, f in self.plan.items() if f.get("expect")}

        def found() -> set[str]:
            return {d for d, why in expected.items() if why in s.reasons_ever.get(d, {})}

        self._wait(lambda: len(found()) >= len(expected), max(90, 150 * self.interval))
        hits = found()
        table: dict[str, dict[str, int]] = {}
        for d, f in self.plan.items():
            row = table.setdefault(str(f["fault"]), {"injected": 0, "flagged": 0, "right_reason": 0})
            row["injected"] += 1
            row["flagged"] += bool(s.reasons_ever.get(d))
            row["right_reason"] += d in hits
        for fault, row in sorted(table.items()):
            example = next((d for d in sorted(hits) if self.plan[d]["fault"] == fault), None)
            why = ""
            if example:
                code = str(self.plan[example]["expect"])
                why = f"; e.g. {example}: {code} ({s.reasons_ever[example][code]})"
            if not any(f["expect"] for f in self.plan.values() if f["fault"] == fault):
                self.say(f"    {fault}: {row['injected']} devices, no health verdict expected "
                         f"({row['flagged']} had a reason now and then)")
                continue
            self.say(f"    {fault}: {row['right_reason']}/{row['injected']} flagged with the right "
                     f"reason{why}")
        healthy_flagged = sorted(d for d, h in s.health.items()
                                 if d not in self.plan and h.get("status") not in ("ok", None))
        step.facts.update(faults=table, expected=len(expected), right_reason=len(hits),
                          healthy_flagged_now=len(healthy_flagged))
        step.ok = len(hits) == len(expected)
        step.summary = (f"{len(hits)} of {len(expected)} devices with injected faults flagged with the "
                        f"right reason; {len(healthy_flagged)} healthy devices not ok right now")

    # -- (6) ---------------------------------------------------------------------------------------

    def debug(self, step: Step) -> None:
        s = self.obs.seen
        device = next(d for d in sorted(s.online) if d not in self.plan)
        answer = self._request(f"{self.obs.o}/debug/open",
                               {"device_id": device, "ttl_s": 300, "operator": "fleet-up"})
        link = answer.get("link")
        if not link:
            raise RuntimeError(f"debug open refused: {answer.get('message')}")
        self.say(f"    {device}: {link}")
        lines = stream_debug_lines(link, 3, max(30.0, 10 * self.interval))
        for line in lines:
            self.say(f"    │ {line}")
        step.facts.update(device=device, link=link, lines=lines)
        step.ok = len(lines) >= 3
        step.summary = f"{len(lines)} log lines of {device} through the debug link"


def summary_table(steps: list[Step]) -> Table:
    table = Table(title="fleet up: what the system's topics showed")
    for col in ("step", "result", "what was seen", "s"):
        table.add_column(col)
    for st in steps:
        table.add_row(f"({st.number}) {st.name}", "[green]ok[/]" if st.ok else "[red]FAILED[/]", st.summary,
                      str(st.facts.get("seconds", "")))
    return table
