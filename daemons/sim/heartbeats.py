"""A fleet of simulated heartbeat streams with injected faults (for the evaluation and the tests).

Healthy devices: per-device offsets, a daily temperature cycle shared by the site (with per-device
amplitude), white sensor noise and slow wander, battery drain at a per-device rate, noisy RSSI and
heap, a lost heartbeat now and then, a rare benign reboot. Faulty devices behave the same until their
fault starts at a random time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("temp_drift", "temp_step", "battery_drain", "heap_leak", "rssi_decay", "reboot_loop",
          "silent_death")
# The reason code (or status) that counts as the right diagnosis for each fault.
EXPECTED = {"temp_drift": "temp_drift", "temp_step": "temp_drift", "battery_drain": "battery_drain",
            "heap_leak": "heap_leak", "rssi_decay": "rssi_degraded", "reboot_loop": "reboot_loop",
            "silent_death": "offline"}
DAY = 86400.0
EPOCH = 1_700_006_400  # heartbeat ts = EPOCH + simulated time (a midnight, UTC)


@dataclass
class SimDevice:
    device_id: str
    hw: str
    fw: str
    rng: random.Random
    t_offset: float
    t_amp: float
    t_noise: float
    batt: float
    drain: float
    rssi: float
    heap: float
    fault: str | None = None
    fault_at: float = math.inf
    fault_rate: float = 0.0
    seq: int = 0
    boot: float = 0.0
    reset: str = "poweron"
    wander: float = 0.0
    r_wander: float = 0.0
    next_crash: float = math.inf
    extra: dict[str, Any] = field(default_factory=dict)

    def heartbeat(self, t: float, ambient: float, epoch: float = EPOCH) -> dict[str, Any] | None:
        """The heartbeat this device sends at simulated time t, or None when none arrives.
        Its `ts` is `epoch` + t (a live simulator passes its start time: ts then tracks the clock)."""
        rng = self.rng
        self.seq += 1
        faulty = t >= self.fault_at
        fault = self.fault if faulty else None
        if fault == "silent_death":
            return None
        if fault == "reboot_loop" and t >= self.next_crash:
            self.boot = t - rng.uniform(1, 50)
            self.reset = "panic"
            self.next_crash = t + rng.uniform(120, 600)
        elif rng.random() < 1 / (10 * 1440):
            self.boot, self.reset = t - rng.uniform(1, 50), "sw"  # a benign reboot (OTA, operator)
        self.wander = 0.98 * self.wander + rng.gauss(0, 0.03)
        temp = ambient * self.t_amp + self.t_offset + self.wander + rng.gauss(0, self.t_noise)
        if fault == "temp_drift":
            temp += self.fault_rate * (t - self.fault_at) / 3600
        elif fault == "temp_step":
            temp += self.fault_rate
        hours = t / 3600
        drain = self.drain * hours
        if fault == "battery_drain":
            drain += self.drain * (self.fault_rate - 1) * (t - self.fault_at) / 3600
        pct = max(0.0, self.batt - drain + rng.gauss(0, 0.1))
        self.r_wander = 0.99 * self.r_wander + rng.gauss(0, 0.2)
        rssi = self.rssi + self.r_wander + rng.gauss(0, 2.0)
        if fault == "rssi_decay":
            rssi -= min(40.0, self.fault_rate * (t - self.fault_at) / 3600)
        heap = self.heap + rng.gauss(0, 1500)
        if fault == "heap_leak":
            leaked = self.fault_rate * (t - max(self.fault_at, self.boot)) / 60
            if heap - leaked < 8000:  # out of memory: the device reboots and leaks again
                self.boot, self.reset = t, "panic"
                leaked = 0.0
            heap -= leaked
        if rng.random() < 0.002:
            return None  # lost on the way
        return {
            "ts": int(epoch + t), "seq": self.seq, "uptime_s": int(t - self.boot), "fw": self.fw,
            "slot": "ota_0",
            "hw": self.hw, "battery_pct": round(pct, 1), "battery_mv": int(3300 + 9 * pct),
            "rssi_dbm": round(rssi), "temp_c": round(temp, 1), "heap_free": int(heap),
            "heap_min_free": int(heap) - 4000, "reset_reason": self.reset,
        }


def ambient(t: float) -> float:
    """The site's air temperature: a daily cycle peaking mid-afternoon."""
    return 24.0 + 3.0 * math.sin(2 * math.pi * (t / DAY - 0.375))


def make_device(i: int, rng: random.Random, fault: str | None = None, fault_at: float = math.inf
                ) -> SimDevice:
    cohort = i % 4
    d = SimDevice(
        device_id=f"sim-{i:05d}", hw=("esp32-s3", "esp32-c3")[cohort % 2], fw=("1.4.2", "1.5.0")[cohort // 2],
        rng=random.Random(rng.random()), t_offset=12.0 + rng.gauss(0, 1.0), t_amp=rng.uniform(0.85, 1.15),
        t_noise=rng.uniform(0.1, 0.3), batt=rng.uniform(70, 100), drain=0.45 * rng.uniform(0.8, 1.2),
        rssi=rng.uniform(-80, -50), heap=rng.uniform(120_000, 180_000), fault=fault, fault_at=fault_at)
    d.boot = -rng.uniform(0, DAY)
    if fault is not None:
        d.fault_rate = {
            "temp_drift": rng.uniform(1.0, 4.0),  # °C/h
            "temp_step": rng.uniform(3.0, 8.0),  # °C
            "battery_drain": rng.uniform(3.0, 6.0),  # times the normal drain
            "heap_leak": rng.uniform(100, 400),  # bytes/min
            "rssi_decay": rng.uniform(3.0, 10.0),  # dB/h
            "reboot_loop": 0.0,
            "silent_death": 0.0,
        }[fault]
        d.next_crash = fault_at
    return d


def make_fleet(n: int, faulty_share: float, duration_s: float, seed: int = 1) -> list[SimDevice]:
    """n devices, the given share faulty (fault types round robin), faults starting at random times."""
    rng = random.Random(seed)
    n_faulty = round(n * faulty_share)
    faulty = set(rng.sample(range(n), n_faulty))
    fleet: list[SimDevice] = []
    k = 0
    for i in range(n):
        if i in faulty:
            fault = FAULTS[k % len(FAULTS)]
            k += 1
            # Leave a warm-up at the start and time to notice at the end.
            fleet.append(make_device(i, rng, fault, rng.uniform(0.15, 0.75) * duration_s))
        else:
            fleet.append(make_device(i, rng))
    return fleet
