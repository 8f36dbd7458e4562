"""The `make fuzz` targets as property tests (hypothesis, a few hundred cases each, seconds in all):
the same strategies (tests/strategies.py) and the same oracles (bench/fuzzing) as the 100,000-case
runs, so a finding shrinks to a minimal example here. The API-bodies target runs in
tests/daemons/api/test_fuzz.py, on that module's running stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from hypothesis import HealthCheck, given, settings

from bench.fuzzing.pure import Codec, Selectors
from bench.fuzzing.stores import Heartbeats, Manifests, Shadows
from bench.fuzzing.writelog import WriteLog
from tests.support import Server

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@PROPERTY
@given(Codec().strategy())
def test_codec_refuses_or_keeps_exactly_what_the_reference_decoder_reads(payload: bytes) -> None:
    Codec().check(payload)


@PROPERTY
@given(Selectors().strategy())
def test_a_selector_is_refused_or_round_trips_and_matches_as_the_contract_says(raw: Any) -> None:
    Selectors().check(raw)


@pytest.fixture
def log(redis: redis_lib.Redis, redis_server: Server) -> Iterator[WriteLog]:
    writes = WriteLog(redis_server.url)
    yield writes
    writes.close()


def test_shadow_updates_are_stored_whole_or_not_at_all(redis: redis_lib.Redis, log: WriteLog) -> None:
    """merge/delta through shadow-sync's handler: rejected writes nothing; accepted stores the
    document the rules make from the one before; reporting the delta empties it."""
    target = Shadows(redis, log)

    @PROPERTY
    @given(target.strategy())
    def check(case: Any) -> None:
        target.check(case)

    check()


def test_manifests_parse_strictly_and_planner_requests_store_all_or_nothing(
        redis: redis_lib.Redis, log: WriteLog, tmp_path: Path) -> None:
    target = Manifests(redis, log, tmp_path)

    @PROPERTY
    @given(target.strategy())
    def check(case: Any) -> None:
        target.check(case)

    check()


def test_heartbeats_are_dropped_without_a_write_or_stored_whole(redis: redis_lib.Redis,
                                                                log: WriteLog) -> None:
    target = Heartbeats(redis, log)

    @PROPERTY
    @given(target.strategy())
    def check(case: Any) -> None:
        target.check(case)

    check()
