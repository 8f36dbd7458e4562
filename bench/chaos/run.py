"""`make chaos`: faults under load, the whole system and a simulated fleet, one fault at a time.

The system of bench.chaos.stack (Redis with appendonly, mosquitto with persistence, every daemon)
and `CHAOS_DEVICES` (default 2,000) simulated devices at a `CHAOS_INTERVAL_S` (default 5) s
heartbeat. Each phase puts one load on the system and, except in the baselines (the same loads
with no fault, measured in the same run), one fault while it runs:

- shadow stream: operator desired updates over MQTT, 50/s over 300 devices for 15 s (the devices
  apply and report each): kill -9 shadow-sync; restart redis-server; restart mosquitto;
- operator requests: desired writes through fleet-api (HTTP), 20/s for 15 s: kill -9 fleet-api;
- a staged rollout to every device (stages 10/50/100 %), the fault once the second stage is open:
  kill -9 ota-planner; restart redis-server; restart mosquitto;
- heartbeats of the whole fleet, 12 s: kill -9 healthwatch.

Then the two mosquitto restarts again on a second system whose daemons subscribe through `$share`
(FLEET_SHARED_SUBSCRIPTIONS=auto), which mosquitto 2.0 does not keep across a restart.

Recovery, from the fault: the first `accepted` answer (or 200) to a request sent after the fault; the
first rollout status with more devices succeeded than before the fault (in the baseline rollout: from
the second stage opening, the time its devices take to install and report, part of every rollout's
recovery too); the first heartbeat healthwatch stored after it (Redis); after a broker restart also
every device online again (a fresh `status`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis as redis_lib

from bench.chaos import check
from bench.chaos.load import Stream, abort, create_rollout, release
from bench.chaos.stack import Fault, Stack
from bench.chaos.watch import Recorder

DEVICES = int(os.environ.get("CHAOS_DEVICES", "2000"))
INTERVAL = float(os.environ.get("CHAOS_INTERVAL_S", "5"))
STREAM_S = float(os.environ.get("CHAOS_STREAM_S", "15"))
FAULT_AFTER_S = 4.0
SHARE = "restart mosquitto, daemons behind $share (FLEET_SHARED_SUBSCRIPTIONS=auto, a second system)"


@dataclass
class Row:
    fault: str
    load: str
    outcome: check.Outcome
    recovery: float | None = None
    finish: float | None = None
    baseline: float | None = None
    online: float | None = None  # all devices online again (broker restarts)
    hb: tuple[int, int] = (0, 0)  # heartbeats delivered during the phase, of them not counted


def say(text: str) -> None:
    print(f"chaos: {text}", file=sys.stderr, flush=True)


class Chaos:
    def __init__(self, stack: Stack, rec: Recorder) -> None:
        self.stack, self.rec = stack, rec
        self.ids = [f"sim-{i:05d}" for i in range(DEVICES)]
        self.groups = 0
        self.rollouts = 0
        self.rows: list[Row] = []
        self.hb_mark = 0.0  # heartbeats up to here are accounted for (windows are contiguous)
        self.hb_total = [0, 0]

    def redis(self) -> Any:
        assert self.stack.redis is not None
        return redis_lib.Redis.from_url(self.stack.redis.url, decode_responses=True)

    def _group(self, size: int = 300) -> list[str]:
        # Each stream has devices of its own: its checks see only its own versions.
        start = self.groups * size % max(1, DEVICES - size + 1)
        self.groups += 1
        return self.ids[start:start + size]

    def _online_after(self, fault: Fault) -> float | None:
        if not self.rec.wait(lambda: self.rec.online_since(fault.wall) >= DEVICES, 120):
            say(f"only {self.rec.online_since(fault.wall)} devices online again after {fault.name}")
            return None
        back = self.rec.back_online(fault.wall)
        return max(back.values()) - fault.at if back else None

    # -- shadow stream and API writes ----------------------------------------------------------------

    def stream(self, name: str, fault: Callable[[], Fault] | None, via: str = "mqtt") -> Row:
        rate = 50.0 if via == "mqtt" else 20.0
        s = Stream(f"s{self.groups}", self._group(), rate, STREAM_S, via).start(
            self.rec, (self.stack.api_url, self.stack.api_token))
        f = None
        if fault is not None:
            time.sleep(FAULT_AFTER_S)
            f = fault()
            say(f"{f.name}: back after {f.back - f.at:.2f} s")
        s.join()
        if via == "mqtt":  # every request answered (or a minute passed)
            self.rec.wait(lambda: all(x.token in self.rec.rec.by_token for x in s.sent), 60)
            with self.rec.cond:
                done = [a.at for x in s.sent for a in self.rec.rec.by_token.get(x.token, [])[:1]]
        else:
            done = [x.done for x in s.sent]
        finish = max(done) - s.started if done else None
        self._quiet(s.devices)
        row = Row(name, "shadow stream (MQTT)" if via == "mqtt" else "operator requests (HTTP API)",
                  check.shadows(self.redis(), self.rec, s), finish=finish)
        if f is not None:
            row.recovery = self._first_answer(s, f)
            if "mosquitto" in f.name:
                row.online = self._online_after(f)
        return self._add(row)

    def _first_answer(self, s: Stream, f: Fault) -> float | None:
        with self.rec.cond:
            if s.via == "mqtt":
                times = [a.at for x in s.sent if x.at > f.at for a in self.rec.rec.by_token.get(x.token, [])
                         if a.accepted]
            else:
                times = [x.done for x in s.sent if x.at > f.at and x.status == 200]
        return min(times) - f.at if times else None

    def _quiet(self, devices: list[str], quiet: float = 2.0) -> None:
        """Wait until no shadow answer about these devices came for `quiet` s (devices have reported)."""
        wanted = set(devices)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with self.rec.cond:
                last = max((a.at for a in self.rec.rec.answers[-5000:] if a.device in wanted), default=0.0)
            if time.monotonic() - last >= quiet:
                return
            time.sleep(0.5)

    # -- rollouts ------------------------------------------------------------------------------------

    def rollout(self, name: str, fault: Callable[[], Fault] | None) -> Row:
        self.rollouts += 1
        rid, version = f"chaos-{self.rollouts}", f"1.{self.rollouts}.0"
        release(self.stack.config, self.stack.work, version)
        t0 = time.monotonic()
        create_rollout(self.rec, rid, version)

        def succeeded() -> int:
            return int((self.rec.rec.rollouts.get(rid, {}).get("counts") or {}).get("succeeded", 0))

        # The fault comes once the second stage (50 %) is open; the baseline notes the same moment:
        # its first success after it is what any recovery of a rollout includes anyway.
        self.rec.wait(lambda: self.rec.rec.rollouts.get(rid, {}).get("stage", 0) >= 1, 300)
        with self.rec.cond:
            before = succeeded()
        f = Fault("none", time.monotonic()) if fault is None else fault()
        if fault is not None:
            say(f"{f.name}: back after {f.back - f.at:.2f} s")

        def settled() -> bool:  # no longer running, and no device left with a job under way
            r = self.rec.rec.rollouts.get(rid, {})
            c = r.get("counts") or {}
            return (r.get("state") not in (None, "running")
                    and not c.get("issued") and not c.get("in_progress"))

        done = self.rec.wait(settled, 120)
        finish = time.monotonic() - t0 if done else None
        if not done:  # an operator would abort it: its devices' job slots are freed for the next one
            say(f"{rid} not settled in 120 s: {self.rec.rec.rollouts.get(rid)}")
            abort(self.rec, rid)
        time.sleep(2)  # late duplicates, if any, would come now
        row = Row(name, f"rollout {version} to {DEVICES:,} devices",
                  check.rollout(self.redis(), self.rec, rid, DEVICES), finish=finish)
        row.recovery = self._progress_after(rid, f, before)
        if "mosquitto" in f.name:
            row.online = self._online_after(f)
        return self._add(row)

    def _progress_after(self, rid: str, f: Fault, before: int) -> float | None:
        t = self.rec.progress_after(rid, max(f.back, f.at), before)
        return t - f.at if t is not None else None

    # -- heartbeats ----------------------------------------------------------------------------------

    def heartbeats(self, name: str) -> Row:
        client = self.redis()
        time.sleep(FAULT_AFTER_S)
        f = self.stack.kill9("healthwatch")
        say(f"{f.name}: back after {f.back - f.at:.2f} s")
        recovery = None
        while time.monotonic() - f.at < 60:
            top = client.zrange("fleet:health:{idx}:seen", -1, -1, withscores=True)
            if top and top[0][1] > f.wall:
                recovery = time.monotonic() - f.at
                break
            time.sleep(0.05)
        time.sleep(max(0.0, 14 - FAULT_AFTER_S - (time.monotonic() - f.at)))
        row = Row(name, "heartbeats of the whole fleet", check.Outcome(), recovery=recovery)
        return self._add(row)

    def phases(self) -> list[tuple[str, Callable[[], Row | None]]]:
        st, base = self.stack, "none (baseline)"
        return [
            (base, lambda: self.stream(base, None)),
            (base, lambda: self.stream(base, None, via="api")),
            (base, lambda: self.rollout(base, None)),
            ("kill -9 shadow-sync",
             lambda: self.stream("kill -9 shadow-sync", lambda: st.kill9("shadowsync"))),
            ("kill -9 fleet-api",
             lambda: self.stream("kill -9 fleet-api", lambda: st.kill9("daemons.api"), via="api")),
            ("kill -9 ota-planner",
             lambda: self.rollout("kill -9 ota-planner", lambda: st.kill9("otaplanner"))),
            ("kill -9 healthwatch", lambda: self.heartbeats("kill -9 healthwatch")),
            ("restart redis-server", lambda: self.stream("restart redis-server", st.restart_redis)),
            ("restart redis-server", lambda: self.rollout("restart redis-server", st.restart_redis)),
            ("restart mosquitto", lambda: self.stream("restart mosquitto", st.restart_mosquitto)),
            ("restart mosquitto", lambda: self.rollout("restart mosquitto", st.restart_mosquitto)),
        ]

    def share_phases(self) -> list[tuple[str, Callable[[], Row | None]]]:
        """The two broker restarts again, on a system whose daemons subscribe through `$share`:
        mosquitto 2.0 does not bring shared subscriptions back from its persistence file, which is
        why plain subscriptions are the default (FLEET_SHARED_SUBSCRIPTIONS=off)."""
        st = self.stack
        return [(SHARE, lambda: self.stream(SHARE, st.restart_mosquitto)),
                (SHARE, lambda: self.rollout(SHARE, st.restart_mosquitto))]

    def heartbeat_window(self, settle: float = 2.0) -> tuple[int, int]:
        """Heartbeats delivered since the last window, up to `settle` s ago (what healthwatch has had
        time to take), and those of them it has not counted; the windows add up to the whole run."""
        end = time.monotonic() - settle
        delivered, missed = check.heartbeat_window(self.redis(), self.rec, self.ids, self.hb_mark, end)
        self.hb_mark = end
        self.hb_total[0] += delivered
        self.hb_total[1] += missed
        return delivered, missed

    def _add(self, row: Row) -> Row:
        row.hb = self.heartbeat_window()
        o = row.outcome
        say(f"{row.fault} / {row.load}: recovery {row.recovery}, finish {row.finish}, accepted {o.accepted}, "
            f"lost {o.lost}, doubled {o.doubled}, unanswered {o.unanswered}, exact {o.exact}, heartbeats "
            f"delivered/not counted {row.hb} {o.notes}")
        self.rows.append(row)
        return row


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def table(rows: list[Row], hb: check.Outcome, sent: int, wall: float,
          hb_share: check.Outcome | None = None) -> str:
    base = {r.load.split()[0]: r.finish for r in rows if r.fault == "none (baseline)"}  # by kind of load
    out = ["| fault | load | recovery s | all online again s | finish s (baseline s) | accepted | lost | "
           "doubled | exact counts | requests never answered | heartbeats in the phase: delivered / not "
           "counted |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        o, b = r.outcome, base.get(r.load.split()[0])
        finish = _s(r.finish) + (f" ({_s(b)})" if r.fault != "none (baseline)" and b else "")
        if r.load.startswith("heartbeats"):  # its own phase; doubles are known for the whole run only
            o = check.Outcome(r.hb[0], r.hb[1], hb.doubled, exact=r.hb[1] == hb.doubled == 0)
            finish = "-"
        out.append(f"| {r.fault} | {r.load} | {_s(r.recovery)} | {_s(r.online)} | {finish} | "
                   f"{o.accepted:,} | {o.lost} | {o.doubled} | {'yes' if o.exact else 'no'} | "
                   f"{r.outcome.unanswered} | {r.hb[0]:,} / {r.hb[1]:,} |")
    notes = [f"- {r.fault} / {r.load}: {'; '.join(r.outcome.notes)}" for r in rows
             if r.outcome.notes and not r.load.startswith("heartbeats")]
    return "\n".join([
        *out, "",
        f"{DEVICES:,} simulated devices (2 simulator processes, one MQTT 3.1.1 connection and persistent "
        f"session each, a heartbeat every {INTERVAL:g} s); Redis appendonly (fsync every second), mosquitto "
        "with persistence; a killed daemon is started again at once (the units add RestartSec=2). "
        "Accepted: requests answered accepted (or 200), devices taken into the rollout, heartbeats the "
        "broker delivered. Lost: accepted but not in the stored shadow / targeted devices that did not "
        "report success or whose success the rollout did not count / heartbeats healthwatch did not "
        "count. Doubled: a clientToken accepted twice or a "
        "stored version with no answer (an update applied again) / a second job or install for a device / "
        "a heartbeat counted twice. Exact counts: all of that zero, and for rollouts the stored counts, "
        "the status topic and the devices' reports all equal to the fleet. Never answered: over MQTT, "
        "requests the broker took that got no answer at all; over HTTP, requests refused while fleet-api "
        "was down (the operator sees the error at once and nothing is stored).",
        f"Heartbeats over the whole run, every phase included: {sent:,} sent by the simulator, "
        f"{hb.accepted:,} delivered by the broker, {hb.lost:,} not counted by healthwatch, {hb.doubled} "
        f"counted twice (the healthwatch row's `doubled`)"
        + (f"; of them, in the second system (`$share`): {hb_share.accepted:,} delivered, "
           f"{hb_share.lost:,} not counted, {hb_share.doubled} counted twice" if hb_share else "")
        + f". Whole run: {wall / 60:.1f} min.",
        *(["", *notes] if notes else []),
        *(["", SHARED] if _shared_gap(rows) else []),
    ])


SHARED = (
    "Restarts of mosquitto with the daemons on shared subscriptions (`$share/<daemon>/...`, "
    "`FLEET_SHARED_SUBSCRIPTIONS=auto`, not the default): mosquitto 2.0 writes a persistent "
    "session's plain subscriptions into its "
    "persistence file but not its shared ones (`persist__subs_save` in src/persist_write.c walks only "
    "the plain subscribers of a topic), so a daemon's session comes back without its subscriptions "
    "until the daemon has reconnected and subscribed again. What devices and operators publish in that "
    "window (they reconnect as fast) is accepted by the broker and delivered to no daemon: operator "
    "requests never answered (and never applied), OTA reports lost (a rollout then keeps those devices "
    "`issued`: the planner times out only jobs it heard were under way, since an offline device keeps "
    "its job until it comes back), heartbeats not counted. The same restarts with the daemons on plain "
    "subscriptions (the default, `FLEET_SHARED_SUBSCRIPTIONS=off`) lose nothing. Replicas behind "
    "`$share` therefore need a broker that keeps shared subscriptions across a restart; on mosquitto, "
    "number them (README, Running replicas).")


def _shared_gap(rows: list[Row]) -> bool:
    def bad(r: Row) -> bool:
        return not r.outcome.exact or r.outcome.unanswered > 0 or r.hb[1] > 0

    return any(bad(r) for r in rows if r.fault == SHARE)


def session(extra_env: dict[str, str], pick: Callable[[Chaos], list[tuple[str, Callable[[], Row | None]]]]
            ) -> tuple[list[Row], check.Outcome, int, list[str]]:
    """One system and fleet from scratch, the phases `pick` gives; (rows, heartbeats of the whole
    session, heartbeats the simulator sent, daemons that exited by themselves)."""
    stack = Stack(Path(tempfile.mkdtemp(prefix="chaos-")), DEVICES, INTERVAL, env_extra=extra_env)
    rec: Recorder | None = None
    try:
        stack.start()
        assert stack.broker is not None
        rec = Recorder(stack.broker.url)
        started = time.time()
        stack.start_sim()
        if not rec.wait(lambda: rec.online_since(started) >= DEVICES, 300):
            raise TimeoutError(f"only {rec.online_since(started)} of {DEVICES} devices came online")
        say(f"{DEVICES} devices online after {time.time() - started:.1f} s")
        time.sleep(INTERVAL)
        c = Chaos(stack, rec)
        only = os.environ.get("CHAOS_ONLY", "")  # a debugging aid: phases whose fault contains this
        for fault, phase in pick(c):
            if fault == "none (baseline)" or only in fault:
                phase()
        stack.stop_sim()
        time.sleep(3)  # healthwatch takes the last heartbeats
        c.heartbeat_window(0.0)
        hb = check.heartbeats(c.redis(), rec, c.ids)
        hb.accepted, hb.lost = c.hb_total  # by the seq windows: a late heartbeat is counted, not in `n`
        hb.exact = hb.lost == hb.doubled == 0
        say(f"heartbeats: delivered {hb.accepted}, lost {hb.lost}, doubled {hb.doubled} {hb.notes}")
        if stack.unexpected:
            say(f"daemons that exited by themselves: {stack.unexpected}")
        return c.rows, hb, stack.sent("heartbeat"), stack.unexpected
    finally:
        if rec is not None:
            rec.close()
        stack.stop()


def main() -> str:
    t0 = time.monotonic()
    rows, hb, sent, unexpected = session({}, Chaos.phases)
    hb2: check.Outcome | None = None
    if not os.environ.get("CHAOS_ONLY") or "share" in os.environ.get("CHAOS_ONLY", ""):
        more, hb2, sent2, unexpected2 = session({"FLEET_SHARED_SUBSCRIPTIONS": "auto"}, Chaos.share_phases)
        rows, sent, unexpected = rows + more, sent + sent2, unexpected + unexpected2
        hb.accepted, hb.lost, hb.doubled = (hb.accepted + hb2.accepted, hb.lost + hb2.lost,
                                            hb.doubled + hb2.doubled)
        hb.exact = hb.exact and hb2.exact
    text = table(rows, hb, sent, time.monotonic() - t0, hb2)
    if unexpected:
        text += "\n\nDaemons that exited by themselves (restarted as systemd would): " + "; ".join(unexpected)
    return text


if __name__ == "__main__":
    print(main())
