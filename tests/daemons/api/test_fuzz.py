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
