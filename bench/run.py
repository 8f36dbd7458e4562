"""`make bench`: every benchmark, printed and written to bench/RESULTS.md with machine and date."""

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
)


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
    for title, module, args in SECTIONS:
        if only and title not in only:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        print(f"== {title}", flush=True)
        table = mod.main(*args)
        print(table, flush=True)
        parts.append(f"## {title}\n\n{table}\n")
    Path(__file__).with_name("RESULTS.md").write_text("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
