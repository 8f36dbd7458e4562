"""Host devices under ota-planner: jobs the planner signs, its artifact store (downloaded over
HTTPS through a TLS front in the test harness), its gates."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.firmware.device import ABORTED, VALID, Device, make_image
from tests.firmware.tls import Pki, TlsProxy
from tests.otaplanner.planner_env import MASTER_KEY, Env, ota
from tests.support import Daemon, Probe, free_port

__all__ = ["ota"]

pytestmark = pytest.mark.timeout(120)
KEY = bytes.fromhex(MASTER_KEY)


@pytest.fixture
def https_planner(ota: Env, pki: Pki) -> Iterator[Callable[..., Daemon]]:
    """Starts the planner with its artifact store behind TLS: the jobs it signs carry
    https://localhost URLs, which the devices verify against the test CA."""
    proxies: list[TlsProxy] = []

    def start(**env: str) -> Daemon:
        port = free_port()
        proxy = TlsProxy(port, pki.server_context()).start()
        proxies.append(proxy)
        return ota.planner(FLEET_ARTIFACT_HTTP_PORT=str(port), FLEET_ARTIFACT_PUBLIC_URL=proxy.url, **env)

    yield start
    for p in proxies:
        p.stop()


def register(ota: Env, image: bytes, version: str, secure_version: int = 1) -> None:
    (ota.artifacts / f"fw-{version}.bin").write_bytes(image)
    r = ota.operator.request(f"{ota.ops}/ota/releases/register", {
        "version": version, "hw": ["c3"], "object": f"fw-{version}.bin",
        "sha256": hashlib.sha256(image).hexdigest(), "size": len(image), "secure_version": secure_version})
    assert r.topic.endswith("/accepted"), r.body


def create(ota: Env, rid: str, version: str) -> None:
    ota.create(rid, version=version, stages=[100], soak_s=0, success_pct=100, max_failure_pct=0,
               min_devices_for_gate=1, timeout_s=90)


def slot_state(dev: Device, slot: int) -> int:
    for e in dev.info()["otadata"]:
        if e["seq"] != 0xFFFFFFFF and (e["seq"] - 1) % 2 == slot:
            return int(e["state"])
    raise AssertionError(dev.info())


def test_good_release_succeeds_and_the_rollout_completes(
        ota: Env, https_planner: Callable[..., Daemon], device: Callable[..., Device],
        probe: Callable[..., Probe], tmp_path: Path) -> None:
    https_planner()
    register(ota, make_image(tmp_path, "1.1.0", secure_version=1), "1.1.0")
    dev = device("--hb", "2", master_key=KEY)
    watch = probe(f"{ota.prefix}/{dev.device_id}/ota/status", f"{ota.prefix}/{dev.device_id}/heartbeat",
                  f"{ota.prefix}/{dev.device_id}/ota/job")
    ota.wait_known(1)
    create(ota, "good", "1.1.0")
    st = watch.wait(f"{ota.prefix}/{dev.device_id}/ota/status", lambda m: m.body["state"] == "succeeded",
                    timeout=40)
    assert st.body["fw"] == "1.1.0"
    watch.wait(f"{ota.prefix}/{dev.device_id}/heartbeat", lambda m: m.body["fw"] == "1.1.0")
    assert slot_state(dev, 1) == VALID
    job = watch.wait(f"{ota.prefix}/{dev.device_id}/ota/job", lambda m: bool(m.payload), timeout=5).body
    assert base64.b64decode(job["manifest"]).count(b'"url":"https://localhost:') == 1
    done = ota.wait_state("good", "completed", timeout=40)
    assert done["counts"]["succeeded"] == 1


def test_failing_self_test_rolls_back_and_the_planner_halts(
        ota: Env, https_planner: Callable[..., Daemon], device: Callable[..., Device],
        probe: Callable[..., Probe], tmp_path: Path) -> None:
    https_planner()
    register(ota, make_image(tmp_path, "1.2.0", secure_version=1, selftest="crash"), "1.2.0")
    dev = device("--hb", "2", master_key=KEY)
    watch = probe(f"{ota.prefix}/{dev.device_id}/ota/status")
    ota.wait_known(1)
    create(ota, "bad", "1.2.0")
    st = watch.wait(f"{ota.prefix}/{dev.device_id}/ota/status", lambda m: m.body["state"] == "rolled_back",
                    timeout=40)
    assert st.body["fw"] == "1.0.0"
    assert slot_state(dev, 1) == ABORTED
    halted = ota.wait_state("bad", "halted", timeout=40)
    assert halted["counts"]["rolled_back"] == 1


def test_manifest_tampered_in_transit_is_rejected(
        ota: Env, device: Callable[..., Device], probe: Callable[..., Probe], tmp_path: Path) -> None:
    ota.planner()
    register(ota, make_image(tmp_path, "1.1.0", secure_version=1), "1.1.0")
    dev = device("--hb", "2", master_key=KEY)
    job_topic = f"{ota.prefix}/{dev.device_id}/ota/job"
    ota.wait_known(1)
    dev.kill()  # offline: the job waits, retained, for the device to come back
    attacker = probe(job_topic)
    create(ota, "evil", "1.1.0")
    job = attacker.wait(job_topic, lambda m: bool(m.payload)).body
    manifest = base64.b64decode(job["manifest"]).replace(b'"1.1.0"', b'"1.1.1"')
    attacker.publish(job_topic, {**job, "manifest": base64.b64encode(manifest).decode()}, retain=True)
    watch = probe(f"{ota.prefix}/{dev.device_id}/ota/status")
    dev.start()
    st = watch.wait(f"{ota.prefix}/{dev.device_id}/ota/status")
    assert (st.body["state"], st.body["job_id"]) == ("rejected", job["job_id"])
    assert st.body["error"] == "bad signature"
    ota.wait_status("evil", lambda b: b["counts"].get("rejected", 0) == 1, timeout=40)


def test_ecdsa_signed_release_succeeds(ota: Env, https_planner: Callable[..., Daemon],
                                       device: Callable[..., Device], probe: Callable[..., Probe],
                                       tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    priv, pub = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    https_planner(FLEET_OTA_ECDSA_KEY=str(priv))
    register(ota, make_image(tmp_path, "1.1.0", secure_version=1), "1.1.0")
    # a device without the HMAC key: only the fleet signing key can convince it
    dev = device("--hb", "2", "--ecdsa-pub", str(pub), master_key=b"\x00" * 32)
    watch = probe(f"{ota.prefix}/{dev.device_id}/ota/status", f"{ota.prefix}/{dev.device_id}/ota/job")
    ota.wait_known(1)
    create(ota, "ec", "1.1.0")
    job = watch.wait(f"{ota.prefix}/{dev.device_id}/ota/job", lambda m: bool(m.payload)).body
    assert job["alg"] == "ecdsa-p256"
    st = watch.wait(f"{ota.prefix}/{dev.device_id}/ota/status", lambda m: m.body["state"] == "succeeded",
                    timeout=40)
    assert st.body["fw"] == "1.1.0"
