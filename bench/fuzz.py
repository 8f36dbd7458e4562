"""`make fuzz`: six hypothesis-driven targets, each fed `--cases` cases (100,000 by default).

    python -m bench.fuzz [--cases N] [--seed S] [--only NAME ...] [--conformance N] [--no-results]

Targets (bench/fuzzing): codec (JSON and MessagePack decode), merge/delta (shadow updates through
shadow-sync's handler), selectors, manifest parsing (with release registrations and rollout
commands through ota-planner's handler), heartbeat validation (through healthwatch's handler),
API bodies (fleet-api over HTTP with the daemons running). The handlers run in-process on a real
redis-server whose keyspace notifications say what every case wrote (bench/fuzzing/writelog.py).
Per target: cases, accepted, rejected (by the contract's answer), findings (an exception that
escaped, something partial or unexpected stored, an accepted input not stored whole) and seconds.
Then schemathesis checks `--conformance` examples per API operation for 5xx and answers that do
not match the OpenAPI document (bench/fuzz_api.py). The table replaces the "Fuzzing" section of
bench/RESULTS.md. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

SECTION = "Fuzzing (make fuzz)"
TARGETS = ("codec", "merge-delta", "selectors", "manifest", "heartbeat", "api")


def _n(counter: Counter[str]) -> str:
    total = sum(counter.values())
    if len(counter) <= 1:
        return f"{total:,}"
    parts = ", ".join(f"{label} {n:,}" for label, n in counter.most_common())
    return f"{total:,} ({parts})"


def table(tallies: list[Any]) -> str:
    lines = [
        "| target | cases | accepted | rejected (the contract's answer) | findings | seconds |",
        "|---|---:|---|---|---:|---:|",
    ]
    for t in tallies:
        lines.append(
            f"| {t.name} | {t.cases:,} | {_n(t.accepted)} | {_n(t.rejected)} | "
            f"{t.finding_count:,} | {t.seconds:.0f} |"
        )
    return "\n".join(lines)


def run_all(only: set[str], cases: int, seed: int, conformance: int) -> tuple[list[Any], list[str], str]:
    """The tallies, every finding's detail, and the schemathesis conformance line."""
    import redis as redis_lib

    from bench.fuzzing import core
    from daemons.cli.localstack import start_redis
    from daemons.runtime import logs

    logs.configure("error")  # every rejection is logged once; here that is only noise
    tallies: list[Any] = []
    details: list[str] = []
    conformance_line = ""

    def go(target: Any) -> None:
        print(f"== {target.name}: {cases:,} cases", flush=True)
        tally = core.run(target, cases, seed, progress=max(1000, cases // 5))
        tallies.append(tally)
        details.extend(tally.details)
        print(table([tally]).splitlines()[-1], flush=True)

    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        from bench.fuzzing.pure import Codec, Selectors

        if "codec" in only:
            go(Codec())
        if "selectors" in only:
            go(Selectors())
        if only & {"merge-delta", "manifest", "heartbeat"}:
            from bench.fuzzing.stores import Heartbeats, Manifests, Shadows
            from bench.fuzzing.writelog import WriteLog

            server = start_redis(work / "redis")
            stack.callback(server.stop)
            redis = redis_lib.Redis.from_url(server.url, decode_responses=True)
            log = WriteLog(server.url)
            stack.callback(log.close)
            if "merge-delta" in only:
                go(Shadows(redis, log))
            if "manifest" in only:
                go(Manifests(redis, log, work / "artifacts"))
            if "heartbeat" in only:
                go(Heartbeats(redis, log))
        if "api" in only or conformance:
            from bench.fuzz_api import fuzz
            from bench.fuzzing.api import ApiBodies, running_api

            api = stack.enter_context(running_api(work / "api"))
            if "api" in only:
                target = ApiBodies(api)
                stack.callback(target.close)
                go(target)
            if conformance:
                print(f"== schemathesis conformance: {conformance} examples per operation", flush=True)
                started = time.monotonic()
                report = fuzz(api.url, api.token, conformance)
                conformance_line = (
                    f"Response conformance (schemathesis, bench/fuzz_api.py, {conformance} examples per "
                    f"operation, valid and invalid requests): {report.total:,} requests over "
                    f"{len(report.examples)} operations, {len(report.failures)} failing, "
                    f"{time.monotonic() - started:.0f} s."
                )
                details.extend(
                    f"conformance {label}: {failure}" for label, failure in report.failures.items()
                )
                print(conformance_line, flush=True)
    return tallies, details, conformance_line


def write_results(text: str) -> None:
    """Replace (or add) this section of bench/RESULTS.md; the other sections stay as they are."""
    results = Path(__file__).with_name("RESULTS.md")
    old = results.read_text() if results.exists() else "# Benchmark results\n"
    parts = old.split("\n## ")
    kept = [parts[0].rstrip() + "\n"] + [
        f"## {p.rstrip()}\n" for p in parts[1:] if p.split("\n", 1)[0].strip() != SECTION
    ]
    results.write_text("\n".join([*kept, text]))


def main(argv: list[str] | None = None) -> int:
    from bench.run import machine

    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per target")
    parser.add_argument("--seed", type=int, default=1, help="hypothesis seed of the run")
    parser.add_argument("--only", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument(
        "--conformance", type=int, default=100, help="schemathesis examples per API operation (0: skip)"
    )
    parser.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    started = time.monotonic()
    tallies, details, conformance = run_all(set(args.only), args.cases, args.seed, args.conformance)
    now = dt.datetime.now(dt.UTC)
    text = "\n".join(
        [
            f"## {SECTION}",
            "",
            f"Measured {now:%Y-%m-%d %H:%M} UTC on {machine()}; seed {args.seed}, "
            f"{time.monotonic() - started:.0f} s in all.",
            "",
            "Cases are drawn by hypothesis (tests/strategies.py: valid templates, the same mutated, hostile "
            "bytes); a finding is an exception escaping the code under test, a rejected input that stored "
            "anything, or an accepted one not stored whole (bench/fuzzing).",
            "",
            table(tallies),
            *(["", conformance] if conformance else []),
            *(["", "Findings:", "", "```", *details, "```"] if details else []),
            "",
        ]
    )
    print(text)
    if not args.no_results:
        write_results(text)
    return 1 if details or any(t.finding_count for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
