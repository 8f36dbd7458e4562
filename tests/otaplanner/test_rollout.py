"""The pure rollout rules: config validation, buckets, gates, rate limit, commands."""

from __future__ import annotations

import pytest

from otaplanner import rollout as ro


def cfg(**kw: object) -> ro.RolloutConfig:
    body: dict[str, object] = {"version": "2.0.0", "stages": [1, 5, 20, 100], "soak_s": 60,
                               "success_pct": 95, "max_failure_pct": 2, "min_devices_for_gate": 20,
                               "timeout_s": 300}
    body.update(kw)
    return ro.RolloutConfig.parse(body)


def test_bucket_is_deterministic_and_uniform() -> None:
    a = [ro.bucket("r1", f"d{i}") for i in range(10_000)]
    assert a == [ro.bucket("r1", f"d{i}") for i in range(10_000)]
    assert all(0 <= b < ro.BUCKET_SCALE for b in a)
    first = sum(1 for b in a if ro.in_stage(b, (1, 5, 20, 100), 0))
    assert 70 <= first <= 130  # about 1 %
    # Another rollout spreads the same devices differently.
    assert a != [ro.bucket("r2", f"d{i}") for i in range(10_000)]


def test_stages_never_shrink_and_a_device_never_moves() -> None:
    stages = (1, 5, 20, 100)
    for i in range(2000):
        b = ro.bucket("r", f"d{i}")
        flags = [ro.in_stage(b, stages, k) for k in range(4)]
        assert flags[3]
        assert flags == sorted(flags)  # once in, in every later stage


@pytest.mark.parametrize("bad", [
    {"stages": [5, 1]}, {"stages": [0, 100]}, {"stages": []}, {"stages": [1, 101]},
    {"soak_s": -1}, {"success_pct": 101}, {"max_failure_pct": "x"}, {"min_devices_for_gate": 0},
    {"timeout_s": 0}, {"rate_per_min": 0}, {"selector": {"nope": 1}}, {"version": "a/b"},
    {"min_devices_for_gate": 1.5}, {"soak_s": True},
])
def test_bad_config_is_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ro.RolloutError) as exc:
        cfg(**bad)
    assert exc.value.code == 400


def test_config_round_trips() -> None:
    c = cfg(selector={"hw": "esp32-c3", "tags": {"site": "a"}}, rate_per_min=60)
    assert ro.RolloutConfig.from_json(c.to_json()) == c


def counts(**n: int) -> ro.Counts:
    return ro.Counts(n)


def test_failure_gate_needs_the_minimum_sample() -> None:
    c = cfg(min_devices_for_gate=20, max_failure_pct=2)
    assert ro.failure_gate(c, counts(failed=5, succeeded=10)) is None  # 15 decided < 20
    v = ro.failure_gate(c, counts(failed=1, rolled_back=1, timed_out=1, succeeded=17))
    assert v is not None and v.action == "halt" and "3 of 20" in v.reason
    assert ro.failure_gate(c, counts(succeeded=100, failed=2)) is None  # 1.96 % <= 2 %


def test_rejected_counts_as_a_failure() -> None:
    assert counts(rejected=3, failed=1, rolled_back=1, timed_out=1).failed == 6


def test_stage_gate_waits_for_success_and_soak() -> None:
    c = cfg(success_pct=90, soak_s=60)
    assert ro.stage_gate(c, 0, 1000, counts(succeeded=8, issued=2), 2000) is None  # 80 %
    assert ro.stage_gate(c, 0, 1000, counts(succeeded=9, issued=1), 1030) is None  # soaking
    v = ro.stage_gate(c, 0, 1000, counts(succeeded=9, issued=1), 1060)
    assert v is not None and v.action == "advance"
    v = ro.stage_gate(c, 3, 1000, counts(succeeded=10), 1060)
    assert v is not None and v.action == "complete"


def test_stage_gate_halts_when_success_is_out_of_reach() -> None:
    v = ro.stage_gate(cfg(success_pct=95), 0, 0, counts(succeeded=1, failed=1), 10_000)
    assert v is not None and v.action == "halt" and "success gate" in v.reason


def test_empty_stage_advances_after_soak() -> None:
    v = ro.stage_gate(cfg(soak_s=5), 0, 0, counts(), 5)
    assert v is not None and v.action == "advance"


def test_health_gate_compares_with_the_rest_of_the_cohort() -> None:
    c = cfg(health_margin=15, health_min_devices=3)
    base = {"c3": [90.0, 88, 92, 91]}
    assert ro.health_gate(c, {"c3": [85.0, 80, 86]}, base) is None
    v = ro.health_gate(c, {"c3": [40.0, 50, 45]}, base)
    assert v is not None and "health gate" in v.reason and "c3" in v.reason
    assert ro.health_gate(c, {"c3": [40.0, 50]}, base) is None  # too few updated
    assert ro.health_gate(c, {"s3": [40.0, 50, 45]}, base) is None  # no baseline for that cohort


def test_rate_allowance() -> None:
    assert ro.rate_allowance(None, 0, 0, 10) == float("inf")
    assert ro.rate_allowance(60, 0, 100, 101) == pytest.approx(1.0)
    assert ro.rate_allowance(600, 0, 100, 100.5) == pytest.approx(5.0)
    assert ro.rate_allowance(600, 0, 0, 1000) == pytest.approx(10.0)  # capped at one second


def test_commands_follow_the_state_table() -> None:
    assert ro.command_target("pause", ro.RUNNING, 0, 4) == ro.PAUSED
    assert ro.command_target("resume", ro.PAUSED, 0, 4) == ro.RUNNING
    assert ro.command_target("abort", ro.HALTED, 0, 4) == ro.ABORTED
    for action, state in [("pause", ro.PAUSED), ("resume", ro.RUNNING), ("abort", ro.COMPLETED),
                          ("rollback", ro.RUNNING), ("advance", ro.HALTED)]:
        with pytest.raises(ro.RolloutError) as exc:
            ro.command_target(action, state, 0, 4)
        assert exc.value.code == 409
    with pytest.raises(ro.RolloutError) as exc:
        ro.command_target("advance", ro.RUNNING, 3, 4)
    assert exc.value.code == 409
    with pytest.raises(ro.RolloutError) as exc:
        ro.command_target("explode", ro.RUNNING, 0, 4)
    assert exc.value.code == 400
