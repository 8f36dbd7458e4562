"""Heartbeats late, twice or out of order (issue 11, PROTOCOL §2): never reboots, gaps or trends."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthwatch.device import DeviceState
from healthwatch.engine import HealthEngine

T0 = 1_700_000_000
# The field report: 20 heartbeats 60 s apart, QoS 1 redelivery after a reconnect reorders them.
FIELD_ORDER = [1, 2, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, *range(15, 21), 20]


def beat(i: int, **extra: object) -> dict[str, object]:
    return {"ts": T0 + 60 * i, "seq": i, "uptime_s": 1000 + 60 * i, "fw": "1.0.0", "slot": "ota_0",
            "hw": "esp32", "temp_c": 31.5, "rssi_dbm": -60, "heap_free": 150_000, "battery_pct": 80.0,
            **extra}


def feed(order, make=beat, engine: HealthEngine | None = None, st: DeviceState | None = None):
    engine, st = engine or HealthEngine(), st or DeviceState()
    verdicts, arrivals = [], []
    for i in order:
        hb = make(i)
        v, _ = engine.score(st, "d1", hb, float(hb["ts"]))
        arrivals.append(engine.last_arrival)
        if v is not None:
            verdicts.append(v)
    return st, verdicts, arrivals


def test_the_field_sequence_stays_ok_without_an_alert():
    st, verdicts, arrivals = feed(FIELD_ORDER)
    assert [v.status for v in verdicts] == ["ok"] * len(verdicts)
    assert all(v.previous is None for v in verdicts), "no alert"
    assert all(v.reasons == [] and v.score == 100 for v in verdicts)
    assert st.rb == 0.0 and st.ms == pytest.approx(0.0, abs=1e-9)
    assert arrivals.count("late") == 3 and arrivals.count("duplicate") == 1
    assert st.seq == 20 and st.uptime == 1000 + 60 * 20 and st.ts == T0 + 60 * 20


def test_a_late_heartbeat_takes_back_its_miss_but_a_real_gap_stays():
    st, _, _ = feed([1, 2, 4])
    assert st.ms == pytest.approx(1.0, rel=0.05)
    feed([3], st=st)
    assert st.ms == pytest.approx(0.0, abs=0.05), "3 arrived after all"
    feed([8], st=st)
    assert st.ms == pytest.approx(3.0, rel=0.05), "5, 6 and 7 are still missing"


@pytest.mark.parametrize("seed", range(20))
def test_reorderings_and_duplicates_change_nothing_the_in_order_stream_would_not(seed):
    rng = random.Random(seed)
    order = list(range(1, 121))
    # Swap neighbours within a reconnect window and redeliver some of them.
    for _ in range(30):
        i = rng.randrange(len(order) - 3)
        j = i + rng.randrange(1, 4)
        order[i], order[j] = order[j], order[i]
    for _ in range(15):
        i = rng.randrange(len(order))
        order.insert(i + rng.randrange(0, 4), order[i])
    st, verdicts, _ = feed(order)
    straight, _, _ = feed(range(1, 121))
    assert st.rb == 0.0 and st.ms < 0.5
    assert {v.status for v in verdicts} == {"ok"} and all(v.previous is None for v in verdicts)
    assert (st.seq, st.uptime, st.ts) == (straight.seq, straight.uptime, straight.ts)


def test_an_old_heartbeat_replayed_much_later_is_a_duplicate():
    st, _, arrivals = feed([*range(1, 30), 5, 29, 28])
    assert arrivals[-3:] == ["duplicate"] * 3 and st.rb == 0.0


def test_a_real_reboot_is_still_seen_in_order_and_out_of_order():
    def rebooting(i: int) -> dict[str, object]:
        hb = beat(i)
        if i >= 10:
            hb["uptime_s"] = 5 + 60 * (i - 10)  # rebooted just before heartbeat 10
        return hb
    st, _, _ = feed(range(1, 15), make=rebooting)
    assert 0.9 < st.rb <= 1.0, "one reboot (decaying since)"
    st, _, _ = feed([*range(1, 9), 10, 9, *range(11, 15)], make=rebooting)
    assert 0.9 < st.rb <= 1.0, "the late 9 (old uptime) is no second reboot"


@pytest.mark.parametrize("jump", [-3600, -60, 86_400, 30 * 86_400])
def test_a_device_whose_clock_jumps(jump):
    def jumping(i: int) -> dict[str, object]:
        hb = beat(i)
        if i >= 10:
            hb["ts"] = int(hb["ts"]) + jump  # type: ignore[call-overload]
        return hb
    st, verdicts, arrivals = feed(range(1, 31), make=jumping)
    assert arrivals == ["new"] * 30
    assert st.rb == 0.0 and st.ms == pytest.approx(0.0, abs=1e-9)
    assert {v.status for v in verdicts} == {"ok"}


@pytest.mark.parametrize("jump", [-3600, 86_400])
def test_a_clock_jump_without_seq_is_judged_by_the_uptime(jump):
    def no_seq(i: int) -> dict[str, object]:
        hb = beat(i)
        del hb["seq"]
        if i >= 10:
            hb["ts"] = int(hb["ts"]) + jump  # type: ignore[call-overload]
        return hb
    st, _, arrivals = feed([*range(1, 21), 20], make=no_seq)
    assert arrivals == ["new"] * 20 + ["duplicate"]
    assert st.ms == 0.0 and st.rb == 0.0


def test_a_restarted_counter_is_new_not_late():
    def restarted(i: int) -> dict[str, object]:
        hb = beat(i)
        if i > 100:
            hb["seq"] = i - 100  # the device lost its counter (PROTOCOL asks it not to)
        return hb
    st, _, arrivals = feed(range(1, 121), make=restarted)
    assert arrivals == ["new"] * 120 and st.seq == 20 and st.ms == 0.0


def test_late_without_seq_and_late_into_a_state_without_a_window():
    def no_seq(i: int) -> dict[str, object]:
        hb = beat(i)
        del hb["seq"]
        return hb
    st, _, arrivals = feed([1, 2, 4, 3], make=no_seq)
    assert arrivals[-1] == "late" and st.rb == 0.0
    st, _, _ = feed([1, 2, 4])
    st.win = 0  # a state stored before the window existed
    _, _, arrivals = feed([3], st=st)
    assert arrivals == ["late"] and st.ms == pytest.approx(0.0, abs=0.05)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_bounded_reordering_with_redeliveries_is_never_a_reboot_or_a_gap(data: st.DataObject) -> None:
    n = data.draw(st.integers(10, 90))
    delays = data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    order = [i for _, i in sorted((i + d, i) for i, d in zip(range(1, n + 1), delays, strict=True))]
    for k, later in data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 10)), max_size=10)):
        order.insert(k + later, order[k])  # a QoS 1 redelivery: a copy, some messages after the first
    st_, verdicts, _ = feed(order)
    assert st_.rb == 0.0 and st_.ms < 0.5
    assert all(v.status == "ok" and v.previous is None for v in verdicts)
