"""Merge, delta, metadata and limits, including the examples of AWS IoT's shadow documentation."""

from __future__ import annotations

import pytest

from shadowsync import document as doc


def test_merge_nested_objects_and_null_deletes():
    target = {"color": "red", "engine": {"rpm": 1000, "temp": 80}}
    doc.merge(target, {"engine": {"rpm": None, "oil": "ok"}, "color": None})
    assert target == {"engine": {"temp": 80, "oil": "ok"}}


def test_arrays_are_replaced_whole():
    target = {"colors": ["RED", "GREEN"]}
    doc.merge(target, {"colors": ["YELLOW"]})
    assert target == {"colors": ["YELLOW"]}


def test_object_emptied_by_deletion_is_removed():
    target = {"a": {"b": 1}, "c": 2}
    doc.merge(target, {"a": {"b": None}})
    assert target == {"c": 2}


def test_aws_delta_example():
    # From AWS IoT's "Device Shadow service documents": desired vs reported.
    desired = {"color": "RED", "state": "STOPPED"}
    reported = {"color": "GREEN", "state": "STOPPED"}
    assert doc.delta(desired, reported) == {"color": "RED"}


def test_delta_nested_and_absent_keys():
    desired = {"lights": {"color": "red", "on": True}, "fan": 3, "extra": {"x": 1}}
    reported = {"lights": {"color": "blue", "on": True}, "fan": 3, "other": 9}
    assert doc.delta(desired, reported) == {"lights": {"color": "red"}, "extra": {"x": 1}}


def test_delta_arrays_compared_whole_and_types_matter():
    assert doc.delta({"a": [1, 2]}, {"a": [1, 2]}) == {}
    assert doc.delta({"a": [1, 2]}, {"a": [2, 1]}) == {"a": [1, 2]}
    assert doc.delta({"a": 1}, {"a": True}) == {"a": 1}
    assert doc.delta({"a": {"b": 1}}, {"a": 5}) == {"a": {"b": 1}}


def test_delta_ignores_reported_only_fields():
    assert doc.delta({}, {"x": 1}) == {}
    assert doc.delta(None, {"x": 1}) == {}


def test_apply_update_versions_metadata_and_desired_null():
    d0 = doc.empty_document()
    d1 = doc.apply_update(d0, {"desired": {"a": {"b": 1}, "c": [1]}}, 100)
    assert d1["version"] == 1
    assert d1["metadata"] == {"desired": {"a": {"b": {"timestamp": 100}}, "c": {"timestamp": 100}}}
    d2 = doc.apply_update(d1, {"reported": {"a": {"b": 1}}}, 101)
    assert d2["version"] == 2
    assert doc.document_delta(d2) == {"c": [1]}
    d3 = doc.apply_update(d2, {"desired": None}, 102)
    assert "desired" not in d3["state"] and "desired" not in d3["metadata"]
    assert d3["state"]["reported"] == {"a": {"b": 1}}
    assert d0 == doc.empty_document(), "the input document is not modified"


def test_metadata_follows_deletions():
    d1 = doc.apply_update(doc.empty_document(), {"reported": {"a": {"b": 1, "c": 2}}}, 5)
    d2 = doc.apply_update(d1, {"reported": {"a": {"b": None}}}, 6)
    assert d2["metadata"]["reported"] == {"a": {"c": {"timestamp": 5}}}


def test_stamp_mirrors_the_request():
    assert doc.stamp({"desired": {"a": 1, "b": {"c": None}}}, 7) == {
        "desired": {"a": {"timestamp": 7}, "b": {"c": {"timestamp": 7}}}}


def test_depth():
    assert doc.depth({"a": {"b": 1}}) == 2
    assert doc.depth({}) == 1
    assert doc.depth({"a": [{"b": {"c": 1}}]}) == 1


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ({"desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}, 400),  # depth 7
        ({"desired": {"k" * 65: 1}}, 400),
        ({"desired": [1, 2]}, 400),
        ({"other": {}}, 400),
        ({}, 400),
        ("nope", 400),
        ({"reported": {"blob": "x" * 9000}}, 413),
    ],
)
def test_limits(state, code):
    with pytest.raises(doc.ShadowError) as err:
        doc.validate_state(state)
    assert err.value.code == code


def test_limits_allow_the_edges():
    six = {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}
    assert doc.validate_state({"desired": six, "reported": {"k" * 64: 1}})


def test_document_size_limit_applies_to_the_merged_state():
    d = doc.apply_update(doc.empty_document(), {"reported": {"a": "x" * 5000}}, 1)
    with pytest.raises(doc.ShadowError) as err:
        doc.apply_update(d, {"reported": {"b": "y" * 5000}}, 2)
    assert err.value.code == 413
