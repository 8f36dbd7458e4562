"""The host firmware against real mosquitto (and shadow-sync): presence, heartbeats, the shadow
round trip, debug log streaming, and OTA jobs signed here and served from a local HTTP server."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.firmware.device import (
    ABORTED,
    INVALID,
    RESUME_EVERY,
    VALID,
    Device,
    ImageServer,
    make_image,
    signed_job,
)
from tests.firmware.tls import make_pki
from tests.support import Probe, Received

pytestmark = pytest.mark.timeout(120)


def states(probe: Probe, topic: str, until: str, timeout: float = 30.0) -> list[dict]:
    """ota/status bodies up to and including the first whose state is `until`."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        m = probe.wait(topic, timeout=max(0.1, deadline - time.monotonic()))
        seen.append(m.body)
        if m.body["state"] == until:
            return seen


def slot_state(dev: Device, slot: int) -> int:
    for e in dev.info()["otadata"]:
        if e["seq"] != 0xFFFFFFFF and (e["seq"] - 1) % 2 == slot:
            return int(e["state"])
    raise AssertionError(f"no otadata entry for slot {slot}: {dev.info()}")


def test_presence_heartbeat_and_last_will(device: Callable[..., Device], probe: Callable[..., Probe],
                                          prefixes: tuple[str, str]) -> None:
    p = prefixes[0]
    watcher = probe(f"{p}/#")
    dev = device("--hb", "1")
    status = watcher.wait(f"{p}/{dev.device_id}/status")
    assert status.body["online"] is True and status.body["fw"] == "1.0.0"
    hb1 = watcher.wait(f"{p}/{dev.device_id}/heartbeat")
    hb2 = watcher.wait(f"{p}/{dev.device_id}/heartbeat")
    assert hb1.body["fw"] == "1.0.0" and hb1.body["slot"] == 0 and hb1.body["hw"] == "c3"
    assert hb2.body["seq"] == hb1.body["seq"] + 1
    assert {"ts", "uptime_s", "reset_reason"} <= set(hb1.body)
    # a retained status is what a late subscriber sees
    late = probe(f"{p}/{dev.device_id}/status")
    assert late.wait(f"{p}/{dev.device_id}/status").retain
    dev.kill()  # power cut: the broker publishes the Last Will
    will = watcher.wait(f"{p}/{dev.device_id}/status", lambda m: m.body.get("online") is False)
    assert will.body == {"online": False}


def test_desired_change_reaches_handler_and_comes_back_reported(
        device: Callable[..., Device], probe: Callable[..., Probe], daemon: Callable[..., object],
        prefixes: tuple[str, str]) -> None:
    p = prefixes[0]
    daemon("shadowsync")
    dev = device("--shadow-key", "led")
    S = f"{p}/{dev.device_id}/shadow"
    op = probe(f"{S}/update/documents", f"{S}/update/accepted", f"{S}/get/accepted", f"{S}/get/rejected")
    dev.wait_log("mqtt: connected")
    op.request(f"{S}/update", {"state": {"desired": {"led": "on"}}})
    dev.wait_log('shadow led = "on"')
    doc = op.wait(f"{S}/update/documents",
                  lambda m: m.body["current"]["state"].get("reported", {}).get("led") == "on")
    assert "delta" not in doc.body["current"]["state"]
    op.publish(f"{S}/get", {"clientToken": "op-get"})
    got = op.wait(f"{S}/get/accepted", lambda m: m.body.get("clientToken") == "op-get")
    assert got.body["state"]["reported"]["led"] == "on" and "delta" not in got.body["state"]
    # after a reboot the device asks for the document and reports with a higher seq (kept in NVS)
    dev.kill()
    dev.start()
    op.request(f"{S}/update", {"state": {"desired": {"led": "blink"}}})
    op.wait(f"{S}/update/documents",
            lambda m: m.body["current"]["state"].get("reported", {}).get("led") == "blink")
    assert not any("409" in line for line in dev.lines)


def test_debug_log_stream_is_rate_limited_and_stops_at_until(
        device: Callable[..., Device], probe: Callable[..., Probe], prefixes: tuple[str, str]) -> None:
    p = prefixes[0]
    dev = device("--chatter-ms", "5", "--log-rate", "20", "--log-burst", "10")
    logs = probe(f"{p}/{dev.device_id}/logs")
    dev.wait_log("mqtt: connected")
    until = int(time.time()) + 3
    logs.publish(f"{p}/{dev.device_id}/shadow/update/delta",
                 {"state": {"debug": {"enabled": True, "until": until, "level": "debug"}}, "version": 2})
    first = logs.wait(f"{p}/{dev.device_id}/logs")
    t0 = time.monotonic()
    batches = [first]
    while time.time() < until - 0.3:
        batches.append(logs.wait(f"{p}/{dev.device_id}/logs", timeout=5))
    elapsed = time.monotonic() - t0
    lines = sum(len(b.body["lines"]) for b in batches)
    assert lines <= 10 + 20 * (elapsed + 0.5)  # burst + rate
    assert any(b.body["dropped"] > 0 for b in batches)  # 200 lines/s offered, 20 allowed
    assert all(line.startswith("app tick") or "fleet:" in line for b in batches for line in b.body["lines"])
    # nobody closes the session: the device stops by itself at until
    while time.time() < until + 0.2:
        with contextlib.suppress(TimeoutError):
            logs.wait(f"{p}/{dev.device_id}/logs", timeout=0.3)
    with pytest.raises(TimeoutError):
        logs.wait(f"{p}/{dev.device_id}/logs", timeout=1.5)


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_good_update_succeeds_and_heartbeats_the_new_version(
        device: Callable[..., Device], probe: Callable[..., Probe], image_server: ImageServer,
        prefixes: tuple[str, str], tmp_path: Path, scheme: str) -> None:
    p = prefixes[0]
    if scheme == "http":  # a development store without TLS
        image_server.stop()
        image_server = ImageServer().start()
    image = make_image(tmp_path, "1.1.0", secure_version=1)
    image_server.files["/fw-1.1.0.bin"] = image
    dev = device()
    watcher = probe(f"{p}/{dev.device_id}/ota/status", f"{p}/{dev.device_id}/heartbeat")
    dev.wait_log("mqtt: connected")
    job = signed_job(dev.device_id, "job-good", "1.1.0", image, image_server.url("/fw-1.1.0.bin"),
                     secure_version=1)
    watcher.publish(f"{p}/{dev.device_id}/ota/job", job, retain=True)
    seen = states(watcher, f"{p}/{dev.device_id}/ota/status", "succeeded")
    order = [s["state"] for s in seen]
    assert order[0] == "downloading" and order[-3:] == ["verifying", "rebooting", "succeeded"]
    assert all(s["job_id"] == "job-good" for s in seen)
    assert seen[-1]["fw"] == "1.1.0" and seen[-2]["fw"] == "1.0.0"
    hb = watcher.wait(f"{p}/{dev.device_id}/heartbeat", lambda m: m.body["fw"] == "1.1.0")
    assert hb.body["slot"] == 1
    assert slot_state(dev, 1) == VALID
    assert image_server.url("/").startswith(f"{scheme}://")
    # the retained job is not taken again by the new firmware
    with pytest.raises(TimeoutError):
        watcher.wait(f"{p}/{dev.device_id}/ota/status", timeout=1.0)


def test_failing_self_test_rolls_back(device: Callable[..., Device], probe: Callable[..., Probe],
                                      image_server: ImageServer, prefixes: tuple[str, str],
                                      tmp_path: Path) -> None:
    p = prefixes[0]
    image = make_image(tmp_path, "1.2.0", secure_version=1, selftest="crash")
    image_server.files["/bad.bin"] = image
    dev = device()
    watcher = probe(f"{p}/{dev.device_id}/ota/status", f"{p}/{dev.device_id}/heartbeat")
    dev.wait_log("mqtt: connected")
    watcher.publish(f"{p}/{dev.device_id}/ota/job",
                    signed_job(dev.device_id, "job-bad", "1.2.0", image, image_server.url("/bad.bin"),
                               secure_version=1), retain=True)
    seen = states(watcher, f"{p}/{dev.device_id}/ota/status", "rolled_back")
    assert [s["state"] for s in seen][-2:] == ["rebooting", "rolled_back"]
    assert seen[-1]["job_id"] == "job-bad" and seen[-1]["fw"] == "1.0.0" and seen[-1]["error"]
    dev.wait_log("self-test failed")
    boot = dev.wait_log("boot: slot=1 fw=1.2.0")
    dev.wait_log("boot: slot=0 fw=1.0.0", after=boot)  # the bootloader went back on its own
    assert slot_state(dev, 1) == ABORTED
    hb = watcher.wait(f"{p}/{dev.device_id}/heartbeat", lambda m: m.body["fw"] == "1.0.0")
    assert hb.body["slot"] == 0
    # the bad image never boots a second time, and the retained job is not retried
    with pytest.raises(TimeoutError):
        watcher.wait(f"{p}/{dev.device_id}/ota/status", timeout=1.0)
    assert sum("boot: slot=1" in line for line in dev.lines) == 1


def test_image_that_never_confirms_is_marked_invalid_at_the_timeout(
        device: Callable[..., Device], probe: Callable[..., Probe], image_server: ImageServer,
        prefixes: tuple[str, str], tmp_path: Path) -> None:
    p = prefixes[0]
    image = make_image(tmp_path, "1.3.0", secure_version=1, selftest="offline")
    image_server.files["/offline.bin"] = image
    dev = device("--confirm", "3")
    watcher = probe(f"{p}/{dev.device_id}/ota/status")
    dev.wait_log("mqtt: connected")
    watcher.publish(f"{p}/{dev.device_id}/ota/job",
                    signed_job(dev.device_id, "job-off", "1.3.0", image, image_server.url("/offline.bin"),
                               secure_version=1), retain=True)
    watcher.wait(f"{p}/{dev.device_id}/ota/status", lambda m: m.body["state"] == "rebooting")
    trial = dev.wait_log("boot: slot=1 fw=1.3.0")
    t0 = time.monotonic()
    dev.wait_log("rolling back", after=trial)
    assert time.monotonic() - t0 >= 2.0  # it waited for the confirm timeout (3 s from boot)
    st = watcher.wait(f"{p}/{dev.device_id}/ota/status", lambda m: m.body["state"] == "rolled_back")
    assert (st.body["job_id"], st.body["fw"]) == ("job-off", "1.0.0")
    assert slot_state(dev, 1) == INVALID  # marked by the app itself, not aborted by the bootloader


def test_tampered_manifest_is_rejected(device: Callable[..., Device], probe: Callable[..., Probe],
                                       image_server: ImageServer, prefixes: tuple[str, str],
                                       tmp_path: Path) -> None:
    p = prefixes[0]
    image = make_image(tmp_path, "1.1.0", secure_version=1)
    image_server.files["/fw.bin"] = image
    dev = device()
    watcher = probe(f"{p}/{dev.device_id}/ota/status")
    dev.wait_log("mqtt: connected")
    job = signed_job(dev.device_id, "job-evil", "1.1.0", image, image_server.url("/fw.bin"),
                     secure_version=1, tamper=lambda m: m.replace(b'"1.1.0"', b'"6.6.6"'))
    watcher.publish(f"{p}/{dev.device_id}/ota/job", job, retain=True)
    st = watcher.wait(f"{p}/{dev.device_id}/ota/status")
    assert st.body["state"] == "rejected" and st.body["job_id"] == "job-evil"
    assert st.body["error"] == "bad signature"
    assert image_server.ranges == [] and "downloading" not in json.dumps(watcher.drain(0.3))


def test_refusals_name_their_reason(device: Callable[..., Device], probe: Callable[..., Probe],
                                    image_server: ImageServer, prefixes: tuple[str, str],
                                    tmp_path: Path) -> None:
    p = prefixes[0]
    image = make_image(tmp_path, "1.1.0", secure_version=1)
    dev = device()
    watcher = probe(f"{p}/{dev.device_id}/ota/status")
    dev.wait_log("mqtt: connected")
    url = image_server.url("/fw.bin")
    cases = {
        "wrong hardware": signed_job(dev.device_id, "j-hw", "1.1.0", image, url, hw="s3", secure_version=1),
        "expired": signed_job(dev.device_id, "j-exp", "1.1.0", image, url, secure_version=1, expires_in=-5),
        "secure_version below the device's": signed_job(dev.device_id, "j-sv", "1.1.0", image, url),
    }
    for reason, job in cases.items():
        watcher.publish(f"{p}/{dev.device_id}/ota/job", job, retain=True)
        st: Received = watcher.wait(f"{p}/{dev.device_id}/ota/status")
        assert (st.body["state"], st.body["job_id"], st.body["error"]) == ("rejected", job["job_id"], reason)


def test_killed_mid_download_resumes_after_the_reboot(
        device: Callable[..., Device], probe: Callable[..., Probe], image_server: ImageServer,
        prefixes: tuple[str, str], tmp_path: Path) -> None:
    p = prefixes[0]
    image = make_image(tmp_path, "1.1.0", secure_version=1, size=256 * 1024)
    image_server.files["/fw.bin"] = image
    image_server.chunk_delay_s = 0.01  # about 0.7 s for the whole image
    dev = device()
    watcher = probe(f"{p}/{dev.device_id}/ota/status", f"{p}/{dev.device_id}/heartbeat")
    dev.wait_log("mqtt: connected")
    watcher.publish(f"{p}/{dev.device_id}/ota/job",
                    signed_job(dev.device_id, "job-k", "1.1.0", image, image_server.url("/fw.bin"),
                               secure_version=1), retain=True)
    watcher.wait(f"{p}/{dev.device_id}/ota/status", lambda m: m.body.get("progress", 0) >= 10)
    dev.kill()  # power cut mid-download, after at least one resume point (every 16 KiB)
    image_server.chunk_delay_s = 0.0
    mark = len(dev.lines)
    dev.start()
    dev.wait_log("boot: slot=0 fw=1.0.0", after=mark)
    dev.wait_log("resuming the download at byte", after=mark)
    seen = states(watcher, f"{p}/{dev.device_id}/ota/status", "succeeded")
    assert [s["state"] for s in seen][-3:] == ["verifying", "rebooting", "succeeded"]
    # the second request went on from a resume point, not from 0
    assert len(image_server.ranges) == 1
    start = int(image_server.ranges[0].removeprefix("bytes=").rstrip("-"))
    assert start > 0 and start % RESUME_EVERY == 0
    watcher.wait(f"{p}/{dev.device_id}/heartbeat", lambda m: m.body["fw"] == "1.1.0")
    assert slot_state(dev, 1) == VALID
    assert dev.slot_bytes(1, len(image)) == image  # the slot, byte for byte


def test_broken_download_resumes_with_range(device: Callable[..., Device], probe: Callable[..., Probe],
                                            image_server: ImageServer, prefixes: tuple[str, str],
                                            tmp_path: Path) -> None:
    p = prefixes[0]
    image = make_image(tmp_path, "1.1.0", secure_version=1, size=128 * 1024)
    image_server.files["/fw.bin"] = image
    image_server.break_once_at = 50_000
    dev = device()
    watcher = probe(f"{p}/{dev.device_id}/ota/status")
    dev.wait_log("mqtt: connected")
    watcher.publish(f"{p}/{dev.device_id}/ota/job",
                    signed_job(dev.device_id, "job-r", "1.1.0", image, image_server.url("/fw.bin"),
                               secure_version=1), retain=True)
    states(watcher, f"{p}/{dev.device_id}/ota/status", "succeeded")
    assert len(image_server.ranges) == 1
    start = int(image_server.ranges[0].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 50_000


def test_kid_selects_the_key_and_keys_rotate(device: Callable[..., Device], probe: Callable[..., Probe],
                                             image_server: ImageServer, prefixes: tuple[str, str],
                                             tmp_path: Path) -> None:
    p = prefixes[0]
    new_master = bytes(range(100, 132))
    image = make_image(tmp_path, "1.1.0", secure_version=1)
    image_server.files["/fw.bin"] = image
    url = image_server.url("/fw.bin")
    dev = device()
    watcher = probe(f"{p}/{dev.device_id}/ota/status")
    dev.wait_log("mqtt: connected")
    # a job under k2 before the device has that key
    watcher.publish(f"{p}/{dev.device_id}/ota/job",
                    signed_job(dev.device_id, "j-k2-early", "1.1.0", image, url, secure_version=1, kid="k2",
                               master=new_master), retain=True)
    st = watcher.wait(f"{p}/{dev.device_id}/ota/status")
    assert (st.body["state"], st.body["error"]) == ("rejected", "unknown key id")
    # the device learns k2 and retires k1 (provisioned, as a new firmware or NVS would carry it);
    # the early job is withdrawn first, or the device, now holding k2, would take it after the restart
    watcher.publish(f"{p}/{dev.device_id}/ota/job", None, retain=True)
    dev.kill()
    dev.extra += ["--add-key", f"k2:{new_master.hex()}", "--retire-kid", "k1"]
    mark = len(dev.lines)
    dev.start()
    dev.wait_log("mqtt: connected", after=mark)
    watcher.publish(f"{p}/{dev.device_id}/ota/job",
                    signed_job(dev.device_id, "j-k1-old", "1.1.0", image, url, secure_version=1), retain=True)
    st = watcher.wait(f"{p}/{dev.device_id}/ota/status", lambda m: m.body["job_id"] == "j-k1-old")
    assert (st.body["state"], st.body["error"]) == ("rejected", "signed with a retired key")
    watcher.publish(f"{p}/{dev.device_id}/ota/job",
                    signed_job(dev.device_id, "j-k2", "1.1.0", image, url, secure_version=1, kid="k2",
                               master=new_master), retain=True)
    seen = states(watcher, f"{p}/{dev.device_id}/ota/status", "succeeded")
    assert all(s["job_id"] == "j-k2" for s in seen) and seen[-1]["fw"] == "1.1.0"


def test_debug_stream_honours_the_level(device: Callable[..., Device], probe: Callable[..., Probe],
                                        prefixes: tuple[str, str]) -> None:
    p = prefixes[0]
    dev = device("--hb", "1", "--chatter-ms", "200")
    logs = probe(f"{p}/{dev.device_id}/logs")
    dev.wait_log("mqtt: connected")
    delta = f"{p}/{dev.device_id}/shadow/update/delta"

    def session(level: str, version: int) -> None:
        debug = {"enabled": True, "until": int(time.time()) + 60, "level": level}
        logs.publish(delta, {"state": {"debug": debug}, "version": version})

    def lines_until(pred: Callable[[str], bool], timeout: float) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = logs.wait(f"{p}/{dev.device_id}/logs", timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            got += m.body["lines"]
            if any(pred(line) for line in got):
                break
        return got

    # info: heartbeats (a debug line each second) stay out of the stream
    session("info", 2)
    info = lines_until(lambda line: False, 2.5)
    assert any(line.startswith("app tick") for line in info)
    assert not any(line.startswith("D (") for line in info)
    # debug: they come through
    session("debug", 3)
    debug = lines_until(lambda line: line.startswith("D (") and "heartbeat" in line, 5.0)
    assert any(line.startswith("D (") and "heartbeat" in line for line in debug)


def test_https_server_the_device_cannot_verify_gets_no_request(
        device: Callable[..., Device], probe: Callable[..., Probe], image_server: ImageServer,
        prefixes: tuple[str, str], tmp_path: Path) -> None:
    p = prefixes[0]
    image = make_image(tmp_path, "1.1.0", secure_version=1)
    image_server.files["/fw.bin"] = image
    dev = device(ca=make_pki(tmp_path / "other", "another").ca)  # trusts another CA only
    watcher = probe(f"{p}/{dev.device_id}/ota/status")
    dev.wait_log("mqtt: connected")
    watcher.publish(f"{p}/{dev.device_id}/ota/job",
                    signed_job(dev.device_id, "job-tls", "1.1.0", image, image_server.url("/fw.bin"),
                               secure_version=1), retain=True)
    st = watcher.wait(f"{p}/{dev.device_id}/ota/status", lambda m: m.body["state"] == "failed")
    assert st.body["error"] == "download failed"
    assert any("E tls: localhost:" in line and "verif" in line.lower() for line in dev.lines)
    assert slot_state(dev, 0) == VALID
