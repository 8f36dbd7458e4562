"""One device's health: its streaming state, the reasons it is unwell, its score and status.

Arrival order (PROTOCOL §2: heartbeats that arrive late, twice or out of order never count as
reboots, gaps or trends). `arrival` sorts each heartbeat before it is scored:

- new: newer than every heartbeat seen, by `seq` when the device counts (so a clock that jumps,
  either way, reorders nothing), else by `ts`, or by `uptime_s` when `ts` went back. A `seq`
  far below the last one (outside the window) or lower with a newer `ts` is a restarted
  counter: new as well.
- duplicate: that `seq` (or, without seq, that `ts`) was already scored.
- late: an older `seq` not seen yet, within the last SEQ_WINDOW (or, without seq, an older
  `ts`). Its only contribution (with seq) is to take back the missed heartbeat counted when its
  gap was seen (the gap was not real); its levels, uptime and time never enter the trends,
  rates, reboot or gap detectors, whose state follows the newest heartbeat only. A late
  heartbeat is not a sign of life either: it does not refresh the offline timer or publish
  a verdict.

Elapsed time between two heartbeats is `ts` bounded by what the device says passed (seq steps
times the interval, or the uptime growth of a device that does not count), so a clock jumping
forward is neither a gap nor a reboot. The window of seen sequence numbers is a bitmask, the
anti-replay window of IPsec (RFC 4303 §3.4.3) used for the same purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from healthwatch.cohort import CohortStats, Levels
from healthwatch.detect import BAD_RESETS, MAD_FLOOR, SD_FLOOR, Track, Tuning, cohort_z, decay, trend_step
from healthwatch.status import STATUSES, HealthStatus

OK, WATCH, CRITICAL, OFFLINE = HealthStatus
PENALTY: dict[int, int] = {WATCH: 30, CRITICAL: 65}
SEQ_WINDOW = 64  # sequence numbers remembered behind the newest (bit i: seq - i was scored)
NEW, LATE, DUPLICATE = "new", "late", "duplicate"
_F_T, _F_D, _F_R, _F_H = SD_FLOOR["temp"], SD_FLOOR["drain"], SD_FLOOR["rssi"], SD_FLOOR["heap"]
_M_T, _M_D, _M_R, _M_H = MAD_FLOOR["temp"], MAD_FLOOR["drain"], MAD_FLOOR["rssi"], MAD_FLOOR["heap"]


@dataclass
class Verdict:
    score: int
    status: str
    reasons: list[dict[str, Any]]
    ts: int
    previous: str | None = None  # set when the status changed with this heartbeat

    def health(self) -> dict[str, Any]:
        return {"score": self.score, "status": self.status, "reasons": self.reasons, "ts": self.ts}


@dataclass(slots=True)
class DeviceState:
    n: int = 0
    ts: float = 0.0
    seq: int = -1
    uptime: float = -1.0
    hw: str | None = None
    fw: str | None = None
    t_raw: float | None = None  # EWMA of the raw temperature (the level the cohort sees)
    t_rel: float | None = None  # cohort median the temperature track is relative to (None: absolute)
    b_pct: float | None = None
    b_ts: float = 0.0
    drain: float | None = None  # %/h, EWMA on ts
    b_t0: float = 0.0
    b_p0: float = 0.0
    rb: float = 0.0  # reboots, exponentially decayed
    reset: str | None = None
    ms: float = 0.0  # missed heartbeats, exponentially decayed
    status: int = OK
    bad_run: int = 0
    good_run: int = 0
    score: int = 100
    wall: float = 0.0  # wall clock of the last heartbeat (offline timer)
    pub_ts: float = 0.0
    pub_sig: str = ""
    # Temperature trend (detect.trend_step): heartbeats seen, slow EWMA, learned variance, last z.
    tt_n: int = 0
    tt_slow: float = 0.0
    tt_var: float = 0.0
    tt_z: float = 0.0
    win: int = 0  # the seq window: bit i set when seq - i was scored or filled
    # Where free heap's fall began (see _heap_ref): its fast level there (bytes) and the heartbeat's
    # time. The heap_leak detail's rate is the fall from there.
    h_ref: float = 0.0
    h_ref_ts: float = 0.0
    t: Track = field(default_factory=Track)
    b: Track = field(default_factory=Track)
    r: Track = field(default_factory=Track)
    h: Track = field(default_factory=Track)
    since: dict[str, int] = field(default_factory=dict)
    reasons: list[dict[str, Any]] = field(default_factory=list)

    _SCALARS: ClassVar[tuple[str, ...]] = (
        "n", "ts", "seq", "uptime", "hw", "fw", "t_raw", "t_rel", "b_pct", "b_ts", "drain", "b_t0",
        "b_p0", "rb", "reset", "ms", "status", "bad_run", "good_run", "score", "wall", "pub_ts", "pub_sig",
        "tt_n", "tt_slow", "tt_var", "tt_z", "win", "h_ref", "h_ref_ts")

    def to_json(self) -> list[Any]:
        return [[getattr(self, k) for k in self._SCALARS], self.t.to_list(), self.b.to_list(),
                self.r.to_list(), self.h.to_list(), self.since, self.reasons]

    @classmethod
    def from_json(cls, v: list[Any]) -> DeviceState:
        st = cls()
        if len(v[0]) < len(cls._SCALARS) - 7:
            raise ValueError("unknown state layout")
        # A state written before the trend fields (or the seq window, or the heap reference) existed lacks
        # them: they start afresh. One written by a newer version (a replica upgraded first) may have
        # more at the end: they are ignored, so mixed versions keep each other's state.
        for k, x in zip(cls._SCALARS, v[0], strict=False):
            setattr(st, k, x)
        st.t, st.b, st.r, st.h = (Track.from_list(x) for x in v[1:5])
        st.since, st.reasons = v[5], v[6]
        return st

    def levels(self) -> Levels:
        return (self.t_raw, self.drain if self.b.n else None,
                self.r.lvl if self.r.n else None, self.h.lvl if self.h.n else None)


def _stat(cs: CohortStats, i: int) -> tuple[float, float] | None:
    m = cs.metrics[i]
    return None if m is None else (m.median, m.mad)


def arrival(st: DeviceState, hb: dict[str, Any]) -> str:
    """NEW, LATE or DUPLICATE: where a validated heartbeat stands against the ones already scored."""
    if not st.n:
        return NEW
    ts, seq, up = hb.get("ts"), hb.get("seq"), hb.get("uptime_s")
    if seq is None or st.seq < 0:
        if ts is None or ts > st.ts:
            return NEW
        if ts < st.ts and up is not None and up > st.uptime >= 0:
            return NEW  # the clock went back; the uptime (a monotonic clock) did not
        return DUPLICATE if ts == st.ts else LATE
    behind = st.seq - seq
    if behind < 0 or behind >= SEQ_WINDOW or (ts is not None and ts > st.ts):
        return NEW  # newer, or a counter that restarted (a late copy is never newer than the newest)
    return DUPLICATE if st.win >> behind & 1 else LATE


def fill(st: DeviceState, hb: dict[str, Any], t: Tuning) -> None:
    """A LATE heartbeat: mark its seq seen and take back the miss counted for it, as decayed since.

    The miss was counted when the first heartbeat after the gap arrived: the nearest newer seq
    in the window, about `behind` intervals before the newest.
    """
    if hb.get("seq") is None or st.seq < 0:
        return  # late by ts alone: which gap it belonged to is unknown, so nothing is taken back
    behind = st.seq - hb["seq"]
    after = next((j for j in range(behind - 1, -1, -1) if st.win >> j & 1), 0)
    st.win |= 1 << behind
    st.ms = max(0.0, st.ms - decay(1.0, after * t.interval_s, t.missed_tau_s))


def observe(st: DeviceState, hb: dict[str, Any], cs: CohortStats, t: Tuning, now: float) -> Verdict:
    """Fold one validated NEW heartbeat (see `arrival`) into the state; return the device's verdict."""
    ts = hb.get("ts", now)
    dt = ts - st.ts if st.n else 0.0
    if dt < 0:
        dt = 0.0  # the device's clock went back: levels still learn, rates do not
    first = st.n == 0
    seq = hb.get("seq")
    steps = seq - st.seq if seq is not None and st.seq >= 0 and not first else 0
    # Time between the two heartbeats as far as it can be told: a clock that jumps forward
    # stretches `dt`, not the count of heartbeats the device sent meanwhile, nor (for a device
    # that does not count) the uptime it says passed.
    elapsed = min(dt, steps * t.interval_s) if steps > 0 else dt
    up = hb.get("uptime_s")
    prev_up = st.uptime
    if seq is None and up is not None and prev_up >= 0 and up >= prev_up:
        elapsed = min(elapsed, up - prev_up)
    st.n += 1
    hw, fw = hb.get("hw"), hb.get("fw")
    if hw is not None:
        st.hw = hw
    if fw is not None:
        st.fw = fw

    # Reboots: uptime went backwards (or grew less than the time that passed, beyond a slack).
    st.rb = decay(st.rb, dt, t.reboot_tau_s)
    rebooted = False
    if up is not None:
        if not first and prev_up >= 0 and up + max(0.5 * t.interval_s, 0.1 * elapsed) < prev_up + elapsed:
            rebooted = True
        st.uptime = up
    reason = hb.get("reset_reason")
    if reason is not None:
        if up is None and not first and reason != st.reset:
            rebooted = True
        st.reset = reason
    if rebooted:
        st.rb += 1.0

    # Missed heartbeats: from seq gaps when the device counts, else from the time that passed.
    missed = 0.0
    if not first:
        if seq is not None and st.seq >= 0:
            if 0 < steps - 1 < 100_000:
                missed = steps - 1
        else:
            if elapsed > 1.5 * t.interval_s:
                missed = round(elapsed / t.interval_s) - 1
    if seq is not None:
        # Capped: a seq jump of 2**40 would otherwise build a 2**40-bit integer (MemoryError, or
        # gigabytes for smaller jumps) only to mask it back to SEQ_WINDOW bits (found by `make fuzz`).
        st.win = (st.win << min(steps, SEQ_WINDOW) | 1) & ((1 << SEQ_WINDOW) - 1) if steps > 0 else 1
        st.seq = seq
    st.ms = decay(st.ms, dt, t.missed_tau_s) + missed

    reasons: list[tuple[str, int, str]] = []
    its = int(ts)

    # Temperature, relative to the cohort median when the cohort has one.
    temp = hb.get("temp_c")
    if temp is not None:
        st.t_raw = temp if st.t_raw is None else st.t_raw + t.alpha_level * (temp - st.t_raw)
        cm = _stat(cs, 0)
        med = cm[0] if cm else None
        if (med is None) != (st.t_rel is None):
            st.t.reset()  # the reference changed: relearn rather than see a jump
            st.tt_n = 0
        st.t_rel = med
        tr = st.t
        rel = temp - (med or 0.0)
        step = tr.update(rel, ts, 0.0, _F_T, t.alpha_temp, t)
        st.tt_n, st.tt_slow, st.tt_var, st.tt_z = trend_step(st.tt_n, st.tt_slow, st.tt_var, tr.lvl, rel, t)
        z = cohort_z(st.t_raw, cm[0], cm[1], _M_T) if cm else 0.0
        if tr.bad(step, t) or abs(z) > t.cohort_z or st.tt_z > t.trend_z:
            sev = CRITICAL if abs(z) > 2 * t.cohort_z or step > 2 * t.step_z else WATCH
            reasons.append(("temp_drift", sev, _temp_detail(st, temp, z, cm, ts, t)))

    # Battery drain rate (%/h) on the heartbeats' own time.
    pct = hb.get("battery_pct")
    if pct is not None:
        _battery(st, pct, ts, t, reasons)
        found = cohort_drain_reason(st, cs, t)
        if found is not None:
            reasons.append(found)

    rssi = hb.get("rssi_dbm")
    if rssi is not None:
        tr = st.r
        step = tr.update(rssi, ts, -1.0, _F_R, t.alpha_rssi, t)
        cm = _stat(cs, 2)
        z = -cohort_z(tr.lvl, cm[0], cm[1], _M_R) if cm else 0.0
        if tr.bad(step, t) or z > t.cohort_z:
            sev = CRITICAL if tr.lvl < -90 else WATCH
            own_db = tr.base - tr.lvl if tr.n > t.warmup else 0.0
            ref = f", cohort median {cm[0]:.0f} dBm" if cm else ""
            reasons.append(("rssi_degraded", sev,
                            f"RSSI {tr.lvl:.0f} dBm, {own_db:.0f} dB below its own baseline{ref}"))

    heap = hb.get("heap_free")
    if heap is not None:
        tr = st.h
        if rebooted and tr.n:
            tr.lvl = heap  # a reboot frees the heap: the leak restarts from scratch
            tr.cu = 0.0
        step = tr.update(heap, ts, -1.0, _F_H, t.alpha_heap, t)
        _heap_ref(st, ts, rebooted, t)
        cm = _stat(cs, 3)
        z = -cohort_z(tr.lvl, cm[0], cm[1], _M_H) if cm else 0.0
        if tr.bad(step, t) or z > t.cohort_z:
            sev = CRITICAL if tr.n > t.warmup and tr.lvl < 0.25 * tr.base else WATCH
            reasons.append(("heap_leak", sev, _heap_detail(st, ts, t)))

    if st.rb >= t.reboot_loop:
        reasons.append(("reboot_loop", CRITICAL, f"about {st.rb:.0f} reboots in the last hour"
                        f" (last reset: {st.reset or 'unknown'})"))
    elif rebooted and st.reset in BAD_RESETS:
        reasons.append(("crash_reboot", WATCH, f"rebooted after {st.reset}"))
    if st.ms >= t.missed_alarm:
        reasons.append(("missed_heartbeats", WATCH, f"about {st.ms:.0f} heartbeats missed in the last hour"))

    st.ts = ts  # the newest heartbeat's own time, even when its clock went back
    st.wall = now
    return _conclude(st, reasons, its, t)


def _heap_ref(st: DeviceState, ts: float, rebooted: bool, t: Tuning) -> None:
    """Move the point the heap's fall is measured from to now when no fall is under way: at the first
    reading and at a reboot (the heap is freed), at a new high of the level, and, once the own
    baseline is learned, while the CUSUM rests at zero (the level within its band: the last such
    time is the CUSUM's estimate of where a change began, Page 1954)."""
    tr = st.h
    if rebooted or tr.n == 1 or tr.lvl >= st.h_ref or (tr.n > t.warmup and tr.cu == 0.0):
        st.h_ref, st.h_ref_ts = round(tr.lvl), ts  # whole bytes: the state stays small in Redis


def _heap_detail(st: DeviceState, ts: float, t: Tuning) -> str:
    """Free heap (KiB), its distance below the own baseline (KiB) once learned, and how fast it falls:
    KiB per hour of the heartbeats' own clock (`ts`), the level's fall since `_heap_ref`'s point
    (bytes / s x 3600 / 1024), given once at least one interval has passed since that point."""
    tr = st.h
    parts = [f"free heap {tr.lvl / 1024:.0f} KiB"]
    if tr.n > t.warmup:
        parts.append(f"{(tr.base - tr.lvl) / 1024:.0f} KiB below its own baseline")
    span = ts - st.h_ref_ts
    if span >= t.interval_s and st.h_ref > tr.lvl:
        since = f"{span / 60:.0f} min" if span < 3600 else f"{span / 3600:.1f} h"
        parts.append(f"falling {(st.h_ref - tr.lvl) / span * 3600 / 1024:.1f} KiB/h over the last {since}")
    return ", ".join(parts)


def _temp_detail(st: DeviceState, temp: float, z: float, cm: tuple[float, float] | None, ts: float,
                 t: Tuning) -> str:
    tr = st.t
    parts = [f"temperature {temp:.1f} °C"]
    if cm:
        side = "above" if z >= 0 else "below"
        parts.append(f"{abs(z):.1f} MAD {side} cohort median {cm[0]:.1f} °C")
    if tr.n > t.warmup:
        rise = tr.lvl - tr.base
        hours = (ts - tr.cu0) / 3600
        parts.append(f"{rise:+.1f} °C vs its own baseline")
        if st.tt_z > t.trend_z:
            # The slow EWMA lags a ramp by (1 - a) / a heartbeats more than the fast level does.
            lag = (1 - t.alpha_trend) / t.alpha_trend - (1 - t.alpha_level) / t.alpha_level
            # Until the lag settles (a young ramp) this underestimates the rate: hence "at least".
            parts.append(f"rising at least {(tr.lvl - st.tt_slow) / lag * 3600 / t.interval_s:.1f} °C/h")
        elif hours > 0.05 and tr.cu != 0:
            parts.append(f"{'rising' if rise >= 0 else 'falling'} {abs(rise) / hours:.1f} °C/h")
    return ", ".join(parts)


def _battery(st: DeviceState, pct: float, ts: float, t: Tuning, reasons: list[tuple[str, int, str]]) -> None:
    prev = st.b_pct
    if prev is None or pct > prev + 2.0:
        # First reading, or charged / replaced: restart the drain estimate.
        st.b_pct, st.b_ts, st.b_t0, st.b_p0 = pct, ts, ts, pct
        st.drain = None
        st.b.reset()
        return
    dt = ts - st.b_ts
    st.b_pct = pct
    if dt <= 0:
        return
    st.b_ts = ts
    span = ts - st.b_t0
    tau = t.drain_tau_h * 3600
    if span < tau:
        # Young estimate: the average rate since the first reading is the best we have.
        st.drain = (st.b_p0 - pct) * 3600 / span
        return
    inst = (prev - pct) * 3600 / dt
    a = dt / (tau + dt)
    d = inst if st.drain is None else st.drain + a * (inst - st.drain)
    st.drain = d
    tr = st.b
    step = tr.update(d, ts, 1.0, _F_D, t.alpha_drain, t)
    own = tr.n > t.warmup and step > t.step_z and d > t.drain_ratio * max(tr.base, _F_D)
    if own:
        sev = CRITICAL if d > 2 * t.drain_ratio * max(tr.base, _F_D) else WATCH
        hours_left = pct / d if d > 0 else float("inf")
        reasons.append(("battery_drain", sev, f"battery draining {d:.2f} %/h, {d / max(tr.base, _F_D):.1f}x "
                        f"its own baseline, empty in about {hours_left:.0f} h"))


def cohort_drain_reason(st: DeviceState, cs: CohortStats, t: Tuning) -> tuple[str, int, str] | None:
    """Battery drain against the cohort: also judges devices too new for their own baseline."""
    m = cs.metrics[1]
    if m is None or st.drain is None or st.b_pct is None:
        return None
    z = cohort_z(st.drain, m.median, m.mad, MAD_FLOOR["drain"])
    if z <= t.cohort_z:
        return None
    sev = CRITICAL if z > 2 * t.cohort_z else WATCH
    return ("battery_drain", sev, f"battery draining {st.drain:.2f} %/h, {z:.1f} MAD above the cohort "
            f"median {m.median:.2f} %/h, empty in about {st.b_pct / max(st.drain, 1e-6):.0f} h")


def _conclude(st: DeviceState, found: list[tuple[str, int, str]], ts: int, t: Tuning) -> Verdict:
    score = 100
    raw: int = OK
    seen: set[str] = set()
    reasons: list[dict[str, Any]] = []
    for code, sev, detail in found:
        if code in seen:
            continue
        seen.add(code)
        score -= PENALTY[sev]
        raw = max(raw, sev)
        since = st.since.get(code)
        if since is None:
            since = st.since[code] = ts
        reasons.append({"code": code, "detail": detail, "since": since})
    for code in [c for c in st.since if c not in seen]:
        del st.since[code]
    score = max(score, 0)
    if score < 40:
        raw = CRITICAL
    previous = st.status
    if previous == OFFLINE:
        st.status, st.bad_run, st.good_run = raw, 0, 0  # alive again: judged afresh
    elif raw > previous:
        st.good_run = 0
        st.bad_run += 1
        if st.bad_run >= t.alarm_after:
            st.status, st.bad_run = raw, 0
    elif raw < previous:
        st.bad_run = 0
        st.good_run += 1
        if st.good_run >= t.clear_after:
            st.status, st.good_run = raw, 0
    else:
        st.bad_run = st.good_run = 0
    st.score = score
    st.reasons = reasons
    changed = STATUSES[previous] if st.status != previous else None
    return Verdict(score, STATUSES[st.status], reasons, ts, changed)


def offline_verdict(st: DeviceState, now: float, t: Tuning) -> Verdict:
    previous = STATUSES[st.status]
    st.status, st.bad_run, st.good_run, st.score = OFFLINE, 0, 0, 0
    last = int(st.ts)
    missed = int((now - st.wall) // t.interval_s)
    st.reasons = [{"code": "missed_heartbeats", "since": last,
                   "detail": f"offline: no heartbeat for {missed} intervals of {t.interval_s:.0f} s"}]
    return Verdict(0, "offline", st.reasons, int(now), previous if previous != "offline" else None)
