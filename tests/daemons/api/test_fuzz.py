"""schemathesis over every operation of the OpenAPI document (bounded here; longer in `make fuzz`)."""

from __future__ import annotations

from bench.fuzz_api import fuzz
from tests.daemons.api.conftest import Stack

EXAMPLES = 12  # per operation: the whole document stays well under a minute on a loaded machine


def test_no_5xx_and_every_answer_matches_the_document(stack: Stack) -> None:
    report = fuzz(stack.url, stack.tokens["admin"], EXAMPLES)
    print("\n".join(report.lines()))  # the counts, shown with -s and in the report
    assert len(report.examples) >= 20 and all(n > 0 for n in report.examples.values())
    assert not report.failures, "\n\n".join(f"{k}: {v}" for k, v in report.failures.items())


def test_api_bodies_are_refused_without_a_write_or_stored_whole(stack: Stack) -> None:
    """The `make fuzz` API-bodies target (bench/fuzzing/api.py), bounded: JSON bodies of every
    operation, from schemathesis seeds mutated by hypothesis, over HTTP to this running stack."""
    from hypothesis import HealthCheck, given, settings

    from bench.fuzzing.api import ApiBodies
    from bench.fuzzing.api import Stack as FuzzStack

    target = ApiBodies(FuzzStack(stack.url, stack.env["FLEET_REDIS_URL"], stack.tokens["admin"]),
                       seeds=8)

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(target.strategy())
    def check(case: object) -> None:
        target.check(case)  # type: ignore[arg-type]

    try:
        check()
    finally:
        target.close()
