"""`make eval`: how well healthwatch finds faulty devices, and how fast it scores.

1. A simulated fleet (daemons.sim.heartbeats): recall, false-positive devices per simulated day, time to
   detect in heartbeats, per fault type.
2. NAB replay (bench/nab): each series as one device's temp_c among a healthy simulated cohort; per
   labelled window whether and when an alarm started in it, and alarms outside windows.
3. Scoring throughput in process, without MQTT or Redis, on one core.

Everything runs on the heartbeats' own time: the whole thing takes a couple of minutes.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from daemons.sim.heartbeats import DAY, EXPECTED, FAULTS, SimDevice, ambient, make_fleet
from healthwatch.detect import Tuning
from healthwatch.device import DeviceState
from healthwatch.engine import HealthEngine

NAB = Path(__file__).resolve().parent / "nab"
TARGET_RECALL, TARGET_FP_PCT, TARGET_TTD = 95.0, 0.5, 10.0


@dataclass
class FaultResult:
    fault: str
    detected_at: float | None = None
    ttd_hb: float | None = None
    right_reason: bool = False
    early: bool = False  # flagged before the fault started
    # Temperature faults: when the fault first exceeds 1 sigma of the device's own sensor noise (a drift
    # of 1 °C/h on a 0.2 °C sensor needs 12 heartbeats to get there); None for the other faults.
    visible_at: float | None = None
    ttd_visible_hb: float | None = None


@dataclass
class FleetResult:
    devices: int
    days: float
    heartbeats: int
    faults: list[FaultResult]
    fp_by_day: list[int]
    healthy: int
    fp_devices: set[str] = field(default_factory=set)
    fp_reasons: dict[str, int] = field(default_factory=dict)


def run_fleet(n: int = 1000, days: float = 2.0, share: float = 0.05, seed: int = 7,
              interval: float = 60.0) -> FleetResult:
    duration = days * DAY
    fleet = make_fleet(n, share, duration, seed)
    engine = HealthEngine(Tuning(interval_s=interval))
    states = {d.device_id: DeviceState() for d in fleet}
    faults = {d.device_id: FaultResult(d.fault, visible_at=_visible_at(d)) for d in fleet if d.fault}
    fp_days: dict[int, set[str]] = defaultdict(set)
    fp_reasons: dict[str, int] = defaultdict(int)
    heartbeats = 0
    steps = int(duration / interval)
    for step in range(steps):
        t = step * interval
        amb = ambient(t)
        for d in fleet:
            st = states[d.device_id]
            hb = d.heartbeat(t, amb)
            if hb is not None:
                heartbeats += 1
                v, _ = engine.score(st, d.device_id, hb, t)
                status = v.status if v else "ok"
                codes = [r["code"] for r in v.reasons] if v else []
            elif engine.is_offline(st, t):
                engine.offline(st, t)
                status, codes = "offline", []
            else:
                continue
            if status == "ok":
                continue
            if d.fault is None:
                if d.device_id not in fp_days[int(t // DAY)]:
                    for c in codes or [status]:
                        fp_reasons[c] += 1
                fp_days[int(t // DAY)].add(d.device_id)
                continue
            fr = faults[d.device_id]
            if t < d.fault_at:
                fr.early = True
                continue
            if fr.detected_at is None:
                fr.detected_at = t
                fr.ttd_hb = (t - d.fault_at) / interval
                if fr.visible_at is not None:
                    fr.ttd_visible_hb = (t - fr.visible_at) / interval  # < 0: caught before 1 sigma
            if EXPECTED[d.fault] in codes or EXPECTED[d.fault] == status:
                fr.right_reason = True
    healthy = n - len(faults)
    fp_all = set().union(*fp_days.values()) if fp_days else set()
    return FleetResult(n, days, heartbeats, list(faults.values()),
                       [len(fp_days.get(i, ())) for i in range(int(days + 0.999))], healthy, fp_all,
                       dict(fp_reasons))


def _visible_at(d: SimDevice) -> float | None:
    if d.fault == "temp_step":
        return d.fault_at  # 3-8 °C at once: far above the noise from the first heartbeat
    if d.fault == "temp_drift":
        return d.fault_at + d.t_noise / (d.fault_rate / 3600)
    return None


def fleet_table(r: FleetResult) -> tuple[str, dict[str, float]]:
    lines = ["| fault | devices | detected | right reason | median TTD (heartbeats) | max TTD "
             "| median TTD after the fault exceeds 1 σ of sensor noise |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for fault in FAULTS:
        rows = [f for f in r.faults if f.fault == fault]
        det = [f for f in rows if f.detected_at is not None]
        ttd = [f.ttd_hb for f in det if f.ttd_hb is not None]
        med = f"{statistics.median(ttd):.0f}" if ttd else "-"
        mx = f"{max(ttd):.0f}" if ttd else "-"
        vis = [f.ttd_visible_hb for f in det if f.ttd_visible_hb is not None]
        mvis = f"{statistics.median(vis):.0f}" if vis else "-"
        right = sum(f.right_reason for f in rows)
        lines.append(f"| {fault} | {len(rows)} | {len(det)} | {right} | {med} | {mx} | {mvis} |")
    total = len(r.faults)
    detected = sum(f.detected_at is not None for f in r.faults)
    right = sum(f.right_reason for f in r.faults)
    step_drift = [f.ttd_hb for f in r.faults
                  if f.fault in ("temp_drift", "temp_step") and f.ttd_hb is not None]
    drift = [f.ttd_hb for f in r.faults if f.fault == "temp_drift" and f.ttd_hb is not None]
    fp_per_day = statistics.mean(r.fp_by_day) if r.fp_by_day else 0.0
    figures = {
        "recall": 100.0 * detected / max(total, 1),
        "recall_right_reason": 100.0 * right / max(total, 1),
        "fp_devices_per_day": fp_per_day,
        "fp_pct_per_day": 100.0 * fp_per_day / max(r.healthy, 1),
        "ttd_step_drift": statistics.median(step_drift) if step_drift else float("nan"),
        "ttd_drift": statistics.median(drift) if drift else float("nan"),
        "early": sum(f.early for f in r.faults),
    }
    summary = [
        "",
        f"{r.devices} devices, {r.days:g} simulated days, {r.heartbeats:,} heartbeats, "
        f"{total} faulty ({r.healthy} healthy).",
        "",
        "| figure | value | target |",
        "|---|---:|---:|",
        f"| recall (any alarm after onset) | {figures['recall']:.1f} % | >= {TARGET_RECALL:g} % |",
        f"| recall with the right reason | {figures['recall_right_reason']:.1f} % | |",
        f"| healthy devices falsely flagged per simulated day | {fp_per_day:.1f} "
        f"({figures['fp_pct_per_day']:.2f} %) | <= {TARGET_FP_PCT:g} % |",
        f"| median time to detect, step and drift | {figures['ttd_step_drift']:.0f} heartbeats "
        f"| <= {TARGET_TTD:g} |",
        f"| median time to detect, drift alone | {figures['ttd_drift']:.0f} heartbeats | <= {TARGET_TTD:g} |",
        f"| faulty devices flagged before their fault started | {figures['early']} | |",
        f"| reasons of the false alarms | {json.dumps(r.fp_reasons) if r.fp_reasons else '-'} | |",
    ]
    return "\n".join(lines + summary), figures


# -- NAB ------------------------------------------------------------------------------------------

def _epoch(text: str) -> int:
    return int(datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp())


def run_nab(name: str, windows: list[list[str]], cohort: int = 12, seed: int = 3) -> list[str]:
    rows = list(csv.DictReader((NAB / name).open()))
    ts = [_epoch(r["timestamp"]) for r in rows]
    values = [float(r["value"]) for r in rows]
    interval = statistics.median(b - a for a, b in itertools.pairwise(ts))
    head = values[: max(50, len(values) // 10)]
    level = statistics.median(head)
    noise = max(0.1, statistics.median(abs(b - a) for a, b in itertools.pairwise(head)))
    spread = max(noise, 1.4826 * statistics.median(abs(v - level) for v in head))
    rng = random.Random(seed)
    # Peers like the machine in normal operation: spread across the cohort as wide as its own normal range.
    offsets = [rng.gauss(0, spread) for _ in range(cohort)]
    engine = HealthEngine(Tuning(interval_s=interval))
    states = [DeviceState() for _ in range(cohort + 1)]
    alarms: list[int] = []
    flagged: list[int] = []
    for i, (t, v) in enumerate(zip(ts, values, strict=True)):
        for k in range(cohort):
            hb = {"ts": t, "seq": i, "uptime_s": t - ts[0], "hw": "nab", "fw": "1",
                  "temp_c": round(level + offsets[k] + rng.gauss(0, noise), 2)}
            engine.score(states[k], f"peer-{k}", hb, t)
        st = states[cohort]
        before = st.status
        engine.score(st, "nab", {"ts": t, "seq": i, "uptime_s": t - ts[0], "hw": "nab", "fw": "1",
                                 "temp_c": v}, t)
        if before == 0 and st.status != 0:
            alarms.append(t)
        if st.status != 0:
            flagged.append(t)
    spans = [(_epoch(a), _epoch(b)) for a, b in windows]
    out = []
    for k, (a, b) in enumerate(spans, 1):
        inside = [x for x in alarms if a <= x <= b]
        if inside:
            hours = (inside[0] - a) / 3600
            share = 100 * (inside[0] - a) / (b - a)
            when = f"caught {hours:.1f} h after the window opened ({share:.0f} % in)"
        elif any(a <= x <= b for x in flagged):
            when = "already flagged when the window opened (alarm raised earlier)"
        else:
            when = "missed"
        out.append(f"| {name} | {k}: {windows[k - 1][0][:16]} → {windows[k - 1][1][:16]} | {when} |")
    outside = sum(1 for x in alarms if not any(a <= x <= b for a, b in spans))
    out.append(f"| {name} | alarms outside windows | {outside} (of {len(alarms)} alarms, "
               f"{(ts[-1] - ts[0]) / DAY:.0f} days) |")
    return out


def nab_table() -> str:
    windows = json.loads((NAB / "windows.json").read_text())
    lines = ["| series | labelled window | result |", "|---|---|---|"]
    for key, spans in windows.items():
        lines += run_nab(key.split("/")[-1], spans)
    return "\n".join(lines)


# -- throughput -----------------------------------------------------------------------------------

def scoring_rate(devices: int = 2000, rounds: int = 50) -> float:
    fleet = make_fleet(devices, 0.05, rounds * 60.0, seed=11)
    engine = HealthEngine()
    states = {d.device_id: DeviceState() for d in fleet}
    beats = []
    for step in range(rounds):
        t = step * 60.0
        amb = ambient(t)
        beats += [(d.device_id, hb) for d in fleet if (hb := d.heartbeat(t, amb)) is not None]
    start = time.perf_counter()
    for device_id, hb in beats:
        engine.score(states[device_id], device_id, hb, hb["ts"])
    return len(beats) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_health")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-nab", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = run_fleet(args.devices, args.days, seed=args.seed)
    table, _figures = fleet_table(result)
    parts = ["## healthwatch: simulated fleet", "", table]
    if not args.skip_nab:
        parts += ["", "## healthwatch: NAB replay (value as temp_c among 12 healthy peers)", "", nab_table()]
    rate = scoring_rate()
    parts += ["", "## healthwatch: scoring throughput (in process, one core)", "",
              f"| heartbeats scored per second | {rate:,.0f} | target >= 50,000 |",
              "", f"(evaluation took {time.perf_counter() - started:.0f} s)"]
    text = "\n".join(parts)
    print(text)
    return text


if __name__ == "__main__":
    main()
