"""`make fuzz` (API part): schemathesis over every operation of fleet-api's OpenAPI document.

Property-based requests generated from the document itself (valid and invalid bodies, paths and
queries), sent with an admin token to a running API backed by the real daemons: no answer may be a
5xx, and every answer must match its documented schema and content type. `fuzz(url, token, n)`
is also what `tests/daemons/api/test_fuzz.py` runs with a small example count.

    python -m bench.fuzz_api [--examples N]   # starts redis, mosquitto, the daemons and the API

`make fuzz` (bench/fuzz.py) runs it after its API-bodies target, on the same running stack.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKS = ("not_a_server_error", "response_schema_conformance", "content_type_conformance")
REQUEST_TIMEOUT_S = 30


@dataclass
class FuzzReport:
    examples: dict[str, int] = field(default_factory=dict)  # operation label -> requests sent
    failures: dict[str, str] = field(default_factory=dict)  # operation label -> first failure

    @property
    def total(self) -> int:
        return sum(self.examples.values())

    def lines(self) -> list[str]:
        out = [f"{label}: {n} requests" + (" FAILED" if label in self.failures else "")
               for label, n in sorted(self.examples.items())]
        out.append(f"total: {self.total} requests over {len(self.examples)} operations, "
                   f"{len(self.failures)} failing")
        return out


def fuzz(url: str, token: str, max_examples: int) -> FuzzReport:
    """Run every operation of `{url}/api/v1/openapi.json` with up to `max_examples` examples each."""
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import checks as st_checks

    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json")
    chosen = [getattr(st_checks, name) for name in CHECKS]
    headers = {"Authorization": f"Bearer {token}"}
    report = FuzzReport()
    def test_for(operation: Any) -> Any:
        label = operation.label
        report.examples[label] = 0

        @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck),
                  phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            report.examples[label] += 1
            case.call_and_validate(base_url=url, headers=headers, checks=chosen, timeout=REQUEST_TIMEOUT_S)

        return run

    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            test_for(operation)()
        # A finding: kept, reported, the next operation goes on. schemathesis raises its findings
        # as a FailureGroup, a BaseExceptionGroup (not an Exception).
        except (Exception, BaseExceptionGroup) as exc:
            report.failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_api")
    parser.add_argument("--examples", type=int, default=200, help="examples per operation")
    args = parser.parse_args(argv)
    from bench.fuzzing.api import running_api

    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as tmp, running_api(Path(tmp)) as stack:
        report = fuzz(stack.url, stack.token, args.examples)
    print("\n".join(report.lines()))
    for label, failure in report.failures.items():
        print(f"\n{label}:\n{failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
