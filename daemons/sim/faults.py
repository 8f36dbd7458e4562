"""Which simulated devices misbehave, and how: a deterministic, seeded plan (`--faults`).

A spec such as `temp_drift=0.5%,heap_leak=0.5%,reboot_loop=0.2%,silent=0.2%,flaky_link=1%` gives each
fault a share of the fleet. Vital faults (temperature, battery, heap, RSSI, reboots, silence) are the
ones of daemons.sim.heartbeats, which simulates them; `flaky_link` is a network fault: the device's
connection drops now and then and it reconnects. The same (devices, spec, seed) always yields the same
plan, in every worker process, so a scenario or a test can recompute which devices were made faulty.
"""

from __future__ import annotations

import random

from daemons.sim.heartbeats import EXPECTED, FAULTS

LINK_FAULTS = ("flaky_link",)
ALIASES = {"silent": "silent_death"}
KNOWN = (*FAULTS, *LINK_FAULTS)
#: The health reason (or status) that diagnoses each fault; None: no health verdict is expected.
DIAGNOSIS: dict[str, str | None] = {**EXPECTED, "flaky_link": None}


def parse_faults(spec: str) -> dict[str, float]:
    """`name=share[%],...` → {fault: share in [0, 1]}, fault names canonical (`silent` → `silent_death`).

    Raises ValueError naming the bad item: an unknown fault, a share that is not a number, or shares
    that add up to more than the whole fleet.
    """
    shares: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, value = item.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if not sep or name not in KNOWN:
            raise ValueError(f"--faults: {item!r}: expected name=share with name one of "
                             f"{', '.join(sorted({*KNOWN, *ALIASES}))}")
        value = value.strip()
        try:
            share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
        except ValueError:
            raise ValueError(f"--faults: {item!r}: share must be a number or a percentage") from None
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"--faults: {item!r}: share must be between 0 and 100%")
        shares[name] = shares.get(name, 0.0) + share
    if sum(shares.values()) > 1.0 + 1e-9:
        raise ValueError("--faults: the shares add up to more than the whole fleet")
    return shares


def assign(devices: int, shares: dict[str, float], seed: int) -> dict[int, str]:
    """{device index: fault} for a fleet of `devices`: round(share × devices) devices per fault, no
    device with two faults, chosen by a shuffle seeded with `seed` (faults taken in name order)."""
    order = list(range(devices))
    random.Random(f"faults:{seed}").shuffle(order)
    plan: dict[int, str] = {}
    taken = 0
    for name in sorted(shares):
        count = round(shares[name] * devices)
        for index in order[taken:taken + count]:
            plan[index] = name
        taken += count
    return plan
