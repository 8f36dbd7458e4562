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


def test_object_emptied_by_deletion_is_kept_as_aws_does():
    target = {"a": {"b": 1}, "c": 2}
    doc.merge(target, {"a": {"b": None}})
    assert target == {"a": {}, "c": 2}


def test_deleting_inside_a_missing_object_creates_nothing():
    target = {"c": 2}
    doc.merge(target, {"a": {"b": None}})
    assert target == {"c": 2}
    doc.merge(target, {"a": {}})
    assert target == {"a": {}, "c": 2}, "an explicit empty object is a value"


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
    assert doc.depth({"a": [1]}) == 2, "an array is a level"
    assert doc.depth({"a": [{"b": {"c": 1}}]}) == 4
    assert doc.depth(1) == 0


def test_depth_and_keys_of_very_deep_values_without_recursion():
    value: object = 1
    for _ in range(5000):
        value = [value]
    assert doc.depth(value) == 5000
    with pytest.raises(doc.ShadowError) as err:
        doc.validate_state({"desired": {"a": value}})
    assert err.value.code == 400


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ({"desired": {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}}, 400),  # depth 7
        ({"desired": {"k" * 65: 1}}, 400),
        ({"desired": {"a": {"b": {"c": {"d": {"e": [[1]]}}}}}}, 400),  # depth 7 with the arrays
        ({"desired": {"a": [[[[[[1]]]]]]}}, 400),  # arrays alone
        ({"desired": {"a": [{"k" * 65: 1}]}}, 400),  # keys inside arrays of objects too
        ({"desired": {"a": [{"": 1}]}}, 400),
        ({"desired": [1, 2]}, 400),
        ({"desired": 5}, 400),
        ({"other": {}}, 400),
        ("nope", 400),
        (doc.MISSING, 400),
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
    assert doc.validate_state({"desired": {"a": {"b": {"c": {"d": {"e": [1]}}}}}})


# AWS IoT Developer Guide, "Device Shadow service documents" > "Empty shadow document properties"
# and "Interacting with shadows" > "Deleting properties": what AWS accepts, with AWS's result.

def _led_document() -> dict:
    d = doc.apply_update(doc.empty_document(), {"desired": {"led": "blue"}}, 1)
    return doc.apply_update(d, {"reported": {"led": "red"}}, 2)


def test_null_state_is_accepted_and_clears_both_sections():
    assert doc.validate_state(None) is None
    d = doc.apply_update(_led_document(), None, 3)
    assert d["version"] == 3
    assert d["state"] == {} and d["metadata"] == {}
    assert doc.public_document(d)["state"] == {"desired": {}, "reported": {}}


def test_empty_state_is_accepted_and_changes_only_the_version():
    before = _led_document()
    assert doc.validate_state({}) == {}
    d = doc.apply_update(before, {}, 3)
    assert d["version"] == 3
    assert d["state"] == before["state"] and d["metadata"] == before["metadata"]


def test_empty_sections_are_accepted():
    before = _led_document()
    d = doc.apply_update(before, {"desired": {}, "reported": {}}, 3)
    assert d["version"] == 3 and d["state"] == before["state"]


def test_null_at_every_level():
    d = doc.apply_update(doc.empty_document(),
                         {"desired": {"a": {"b": {"c": 1, "d": 2}}, "e": 1}, "reported": {"x": 1}}, 1)
    d = doc.apply_update(d, {"desired": {"a": {"b": {"c": None}}}}, 2)
    assert d["state"]["desired"] == {"a": {"b": {"d": 2}}, "e": 1}
    d = doc.apply_update(d, {"desired": {"a": {"b": {"d": None}}}}, 3)
    assert d["state"]["desired"] == {"a": {"b": {}}, "e": 1}
    assert d["metadata"]["desired"]["a"] == {"b": {"timestamp": 3}}
    d = doc.apply_update(d, {"desired": {"a": None}}, 4)
    assert d["state"]["desired"] == {"e": 1} and "a" not in d["metadata"]["desired"]
    d = doc.apply_update(d, {"desired": None}, 5)
    assert "desired" not in d["state"] and d["state"]["reported"] == {"x": 1}
    assert d["version"] == 5


def test_document_size_limit_applies_to_the_merged_state():
    d = doc.apply_update(doc.empty_document(), {"reported": {"a": "x" * 5000}}, 1)
    with pytest.raises(doc.ShadowError) as err:
        doc.apply_update(d, {"reported": {"b": "y" * 5000}}, 2)
    assert err.value.code == 413
