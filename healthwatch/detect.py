"""Per-device streaming detectors: O(1) time and memory per heartbeat.

Each metric has a `Track`: a fast EWMA level, a slowly learned own baseline with its typical
deviation, and a one-sided CUSUM in the direction that means trouble (temperature up, free heap down,
RSSI down, battery drain up). The baseline and deviation only learn while the track is quiet, so a
slow fault cannot teach the detector that it is normal. Temperature is tracked relative to the cohort
median, which removes the daily cycle every device of a site shares, and also has a trend statistic
(`trend_step`): a slow drift shows in the gap between a fast and a slow EWMA long before the level
leaves its noise band. A slow drift is hard to see at all: with the simulator's noise (0.1-0.3 °C white
plus a random wander), even a detector told the exact onset needs a median of about 18 heartbeats to
reach 4.5 standard deviations on the 1-4 °C/h drifts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    interval_s: float = 60.0  # expected heartbeat interval
    warmup: int = 60  # heartbeats before a device's own baseline is trusted
    alpha_level: float = 0.3  # fast EWMA of each metric
    # Own baselines (per heartbeat): temperature follows its slow daily wander (relative to the cohort),
    # RSSI and heap change slowly when healthy, so their baselines are slower and a decay shows.
    alpha_temp: float = 1 / 60
    alpha_drain: float = 1 / 240
    alpha_rssi: float = 1 / 720
    alpha_heap: float = 1 / 240
    alpha_dev: float = 1 / 240
    clip: float = 2.0  # most the baseline moves per heartbeat, in deviations (times alpha_base)
    cusum_k: float = 1.5  # in units of the typical deviation
    cusum_h: float = 10.0
    step_z: float = 6.0  # smoothed level this many deviations from the own baseline
    cohort_z: float = 5.0  # robust z against the cohort (MAD scaled to a standard deviation)
    # Temperature trend: the fast level minus a slow EWMA of the same (cohort-relative) series grows
    # with a ramp; scaled by its own learned spread, one threshold fits every device's noise and wander.
    alpha_trend: float = 1 / 30
    alpha_trend_var: float = 1 / 500
    trend_z: float = 4.25
    trend_young: float = 4.0  # widen a spread learned from few heartbeats (see trend_step)
    drain_tau_h: float = 1.0  # time constant of the battery drain rate
    drain_ratio: float = 2.0  # drain at least this multiple of the own baseline (and step_z)
    reboot_tau_s: float = 3600.0
    reboot_loop: float = 2.5  # decayed reboot count: 3 reboots within about half an hour
    missed_tau_s: float = 3600.0
    missed_alarm: float = 5.0  # missed heartbeats within about missed_tau_s
    alarm_after: int = 3  # consecutive bad heartbeats before the status worsens
    clear_after: int = 5  # consecutive better heartbeats before it recovers
    offline_after: float = 3.0  # intervals without a heartbeat (wall clock)


# Floors of the typical deviation per metric: sensors are quantised, a perfectly quiet device must
# not turn a 0.1 °C wobble into an alarm.
SD_FLOOR = {"temp": 0.3, "drain": 0.1, "rssi": 3.0, "heap": 512.0}
TREND_SD_FLOOR = 0.04  # °C: spread of the trend statistic of a quiet, quantised sensor
# Floors of the cohort MAD (already scaled by 1.4826).
MAD_FLOOR = {"temp": 0.5, "drain": 0.15, "rssi": 3.0, "heap": 4096.0}
MAD_SCALE = 1.4826
BAD_RESETS = frozenset({"panic", "int_wdt", "task_wdt", "wdt", "brownout", "exception"})


class Track:
    """One metric's streaming state. `sign` is +1 when rising is bad, -1 when falling is."""

    __slots__ = ("base", "cu", "cu0", "dev", "lvl", "n")

    def __init__(self) -> None:
        self.lvl = 0.0
        self.base = 0.0
        self.dev = 0.0
        self.cu = 0.0
        self.cu0 = 0.0
        self.n = 0

    def reset(self) -> None:
        self.n = 0
        self.cu = 0.0

    def update(self, x: float, ts: float, sign: float, floor: float, alpha: float, t: Tuning) -> float:
        """Feed one value; return the step statistic (in deviations, positive = bad; 0 while warming).

        `sign` 0 means both directions are bad: the CUSUM and the step follow whichever side moved.
        """
        n = self.n
        if n == 0:
            self.lvl = self.base = x
            self.dev = floor
            self.cu = 0.0
            self.cu0 = ts
            self.n = 1
            return 0.0
        self.lvl += t.alpha_level * (x - self.lvl)
        e = x - self.base
        if n < t.warmup:
            # Learning: running mean and mean absolute deviation (x 1.2533 ~ a standard deviation).
            self.base += e / (n + 1)
            self.dev += (abs(e) * 1.2533 - self.dev) / (n + 1)
            self.n = n + 1
            self.cu0 = ts
            return 0.0
        sd = self.dev if self.dev > floor else floor
        two = sign == 0.0
        if two:
            # Two-sided: cu > 0 tracks a rise, cu < 0 a fall.
            sign = 1.0 if self.cu > 0 or (self.cu == 0 and e >= 0) else -1.0
        cu = self.cu * sign + sign * e / sd - t.cusum_k
        if cu <= 0.0:
            cu = 0.0
            self.cu0 = ts
        self.cu = cu * sign
        step = (abs(self.lvl - self.base) if two else sign * (self.lvl - self.base)) / sd
        # The baseline always learns, but each heartbeat may move it by at most `clip` deviations:
        # natural wander is followed, a fault outruns it (and no alarm can lock the baseline).
        c = t.clip * sd
        self.base += alpha * (c if e > c else -c if e < -c else e)
        a = abs(e)
        self.dev += t.alpha_dev * ((a if a < 4 * sd else 4 * sd) * 1.2533 - self.dev)
        self.n = n + 1
        return step

    def bad(self, step: float, t: Tuning) -> bool:
        return self.n > t.warmup and (abs(self.cu) > t.cusum_h or step > t.step_z)

    def sd(self, floor: float) -> float:
        return self.dev if self.dev > floor else floor

    def to_list(self) -> list[float]:
        return [self.lvl, self.base, self.dev, self.cu, self.cu0, self.n]

    @classmethod
    def from_list(cls, v: list[float]) -> Track:
        tr = cls()
        tr.lvl, tr.base, tr.dev, tr.cu, tr.cu0, n = v
        tr.n = int(n)
        return tr


def trend_step(n: int, slow: float, var: float, lvl: float, x: float, t: Tuning
               ) -> tuple[int, float, float, float]:
    """One heartbeat of the trend statistic: (n, slow, var) in, (n, slow, var, z) out; z 0 while warming.

    `x` is the value, `lvl` its fast EWMA (already updated). The slow EWMA first follows the fast level
    (so the first readings, e.g. against a cohort median still forming, are forgotten), then runs on its
    own until its lag is settled; from `warmup` heartbeats on the spread is learned, as a plain mean
    until it holds 1 / alpha_trend_var heartbeats, then as an EWMA; z counts from 2 x `warmup` on.
    """
    if n < t.warmup // 2:
        return n + 1, lvl, 0.0, 0.0
    slow += t.alpha_trend * (x - slow)
    if n < t.warmup:
        return n + 1, slow, 0.0, 0.0
    d = lvl - slow
    sd = math.sqrt(var)
    if sd < TREND_SD_FLOOR:
        sd = TREND_SD_FLOOR
    # Clipped at 3 spreads, so outliers (and a fault in progress) teach it little.
    c = 3.0 * sd
    dc = c if d > c else -c if d < -c else d
    m = n - t.warmup + 1  # heartbeats in the spread
    a = t.alpha_trend_var
    var += (dc * dc - var) * (1.0 / m if m * a < 1.0 else a)
    if n < 2 * t.warmup:
        return n + 1, slow, var, 0.0
    if m * a < 1.0:
        # A young spread is uncertain (the statistic is smooth: few independent samples): widen it.
        sd *= 1.0 + t.trend_young * (1.0 / math.sqrt(m) - math.sqrt(a))
    return n + 1, slow, var, d / sd


def decay(value: float, dt: float, tau: float) -> float:
    if value == 0.0 or dt <= 0:
        return value
    return value * math.exp(-dt / tau)


def cohort_z(level: float, median: float, mad: float, floor: float) -> float:
    scale = mad * MAD_SCALE
    return (level - median) / (scale if scale > floor else floor)
