"""The pure translation of otaplanner.aws_jobs: topics, job ids, statuses."""

from __future__ import annotations

import pytest

from otaplanner import aws_jobs as aj
from otaplanner import rollout as ro


def test_requests_are_the_four_device_topics():
    assert aj.request_of("jobs/get") == ("get", None)
    assert aj.request_of("jobs/start-next") == ("start-next", None)
    assert aj.request_of("jobs/r1/get") == ("get", "r1")
    assert aj.request_of("jobs/$next/get") == ("get", "$next")
    assert aj.request_of("jobs/r1/update") == ("update", "r1")
    for other in ("jobs/notify-next", "jobs/get/accepted", "jobs//update", "jobs/r1/update/accepted",
                  "ota/status", "jobs"):
        assert aj.request_of(other) is None, other


def test_job_ids_round_trip_and_carry_no_topic_wildcards():
    assert aj.aws_job_id("r1@dev-1") == "r1"
    assert aj.aws_job_id("r1@dev-1#rb") == "r1@rollback"
    assert aj.our_job_id("r1", "dev-1") == "r1@dev-1"
    assert aj.our_job_id("r1@rollback", "dev-1") == "r1@dev-1#rb"
    assert aj.our_job_id("$next", "dev-1") is None and aj.our_job_id("a@b", "dev-1") is None


def test_statuses_map_onto_the_planner_report_words():
    assert aj.report_body("r1@d", "IN_PROGRESS", {}) == {"job_id": "r1@d", "state": "downloading"}
    assert aj.report_body("r1@d", "SUCCEEDED", {"fw": "2"})["state"] == "succeeded"
    assert aj.report_body("r1@d", "FAILED", {"state": "rolled_back", "error": "x"}) == {
        "job_id": "r1@d", "state": "rolled_back", "error": "x"}
    # a finer state must belong to the same AWS status
    assert aj.report_body("r1@d", "FAILED", {"state": "succeeded"})["state"] == "failed"
    assert aj.report_body("r1@d", "REJECTED", {})["state"] == "rejected"
    for status in ("QUEUED", "TIMED_OUT", "CANCELED", "REMOVED", "done", "None"):
        with pytest.raises(aj.JobsRejected) as exc:
            aj.report_body("r1@d", status, {})
        assert exc.value.code == "InvalidRequest"
    # every device state has an AWS status; every word a device may send is a §3 report
    assert set(aj.TO_AWS) == set(ro.DEVICE_STATES)
    assert all(word in ro.REPORTED for word in aj.FROM_AWS.values())


@pytest.mark.parametrize("bad", [["a"], {"k": 1}, {str(i): "v" for i in range(11)}, {"k": "v" * 1025}, "x"])
def test_status_details_are_at_most_ten_string_pairs(bad):
    with pytest.raises(aj.JobsRejected):
        aj.status_details(bad)
    assert aj.status_details(None) == {} and aj.status_details({"fw": "2.0.0"}) == {"fw": "2.0.0"}
