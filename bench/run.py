"""`make bench`: every benchmark, printed and written to bench/RESULTS.md with machine and date.

`python -m bench.run bench.fleet` (titles or module names) runs only those sections and keeps the
others of RESULTS.md as they were. Sections in ON_REQUEST run only when named (`make chaos`).
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import sys
from pathlib import Path

SECTIONS: tuple[tuple[str, str, tuple[list[str], ...]], ...] = (
    ("shadow-sync", "bench.shadow", ()),
    ("ota-planner", "bench.ota", ()),
    ("healthwatch", "bench.health", ()),
    ("healthwatch evaluation (make eval)", "bench.eval_health", ([],)),
    ("fleet: 10,000 simulated devices through every daemon", "bench.fleet", ()),
    ("fleet capacity: Redis per device, healthwatch headroom, embedded broker", "bench.capacity", ()),
    ("chaos: faults under load (make chaos)", "bench.chaos.run", ()),
)
ON_REQUEST = {"bench.chaos.run"}  # ~10 min of faults: not part of `make bench`


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def main() -> int:
    only = set(sys.argv[1:])
    now = dt.datetime.now(dt.UTC)
    parts = [f"# Benchmark results\n\nDate: {now:%Y-%m-%d %H:%M} UTC  \nMachine: {machine()}\n"
             "\nRatios compare with a bare MQTT relay measured in the same run, on the same broker: these "
             "machines are shared and noisy, so absolute numbers move and ratios much less.\n"]
    selected = {title for title, module, _ in SECTIONS
                if title in only or module in only or (not only and module not in ON_REQUEST)}
    for title, module, args in SECTIONS:
        if title not in selected:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        print(f"== {title}", flush=True)
        table = mod.main(*args)
        print(table, flush=True)
        parts.append(f"## {title}\n\nMeasured {now:%Y-%m-%d %H:%M} UTC.\n\n{table}\n")
    results = Path(__file__).with_name("RESULTS.md")
    if only and results.exists():  # a partial run replaces its own sections and keeps the others
        kept = [p for p in results.read_text().split("\n## ")[1:]
                if p.split("\n", 1)[0].strip() not in selected]
        parts += [f"## {p.rstrip()}\n" for p in kept]
    results.write_text("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
