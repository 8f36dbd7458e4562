"""The operator's load of a chaos phase: a shadow stream over MQTT, desired writes over the HTTP
API, and a staged rollout. Each request carries its own key, so its effect is found in the stored
shadow by name: a request that was answered `accepted` (or 200) must be there, once.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.chaos.watch import Recorder
from daemons.cli.publish import publish
from daemons.runtime.config import load_settings


@dataclass
class Sent:
    token: str
    device: str
    at: float
    status: int | None = None  # HTTP status (API requests); None: no answer
    done: float = 0.0


@dataclass
class Stream:
    """Desired updates at `rate` per second for `duration` seconds, round robin over `devices`.

    MQTT (`via="mqtt"`): `{p}/{id}/shadow/update` with a clientToken, answered on the device's
    `shadow/update/accepted|rejected` (read from the Recorder). HTTP (`via="api"`): `PATCH
    /devices/{id}/shadow` with an operator token; two client threads, each waiting for its answer.
    Every update sets `desired.<section>.<token>`; tokens are `<phase>-<n>`.
    """

    phase: str
    devices: list[str]
    rate: float
    duration: float
    via: str = "mqtt"
    sent: list[Sent] = field(default_factory=list)
    started: float = 0.0
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def section(self) -> str:
        return "api" if self.via == "api" else "c"

    def start(self, rec: Recorder, api: tuple[str, str] = ("", "")) -> Stream:
        self.started = time.monotonic()
        if self.via == "mqtt":
            self._threads = [threading.Thread(target=self._mqtt, args=(rec,), daemon=True)]
        else:
            self._threads = [threading.Thread(target=self._api, args=(api, k, 2), daemon=True)
                             for k in range(2)]
        for t in self._threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self._threads:
            t.join()

    def _mqtt(self, rec: Recorder) -> None:
        n = 0
        while (elapsed := time.monotonic() - self.started) < self.duration:
            due = int(elapsed * self.rate)
            while n <= due:
                device, token = self.devices[n % len(self.devices)], f"{self.phase}-{n}"
                self.sent.append(Sent(token, device, time.monotonic()))
                rec.publish(f"fleet/{device}/shadow/update",
                            {"state": {"desired": {self.section: {token: n}}}, "clientToken": token})
                n += 1
            time.sleep(0.005)

    def _api(self, api: tuple[str, str], k: int, of: int) -> None:
        url, token = api
        n = k
        while time.monotonic() - self.started < self.duration:
            device, key = self.devices[n % len(self.devices)], f"{self.phase}-{n}"
            s = Sent(key, device, time.monotonic())
            self.sent.append(s)
            req = urllib.request.Request(
                f"{url}/devices/{device}/shadow", method="PATCH",
                data=json.dumps({"state": {"desired": {self.section: {key: n}}}}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    s.status = resp.status
            except urllib.error.HTTPError as exc:
                s.status = exc.code
            except OSError:
                time.sleep(0.05)  # refused while the API is down: the operator tries the next one
            s.done = time.monotonic()
            n += of
            time.sleep(max(0.0, 1.0 / self.rate * of - (s.done - s.at)))


STAGES = [10, 50, 100]


def release(config: Path, work: Path, version: str) -> None:
    """Upload a 64 KiB image to the artifact store and register it (`fleetctl release publish`)."""
    image = work / f"fw-{version}.bin"
    image.write_bytes(secrets.token_bytes(64 * 1024))
    args = argparse.Namespace(file=image, version=version, hw=["esp32-c3", "esp32-s3"], secure_version=0,
                              notes=None, object=None, timeout=60.0)
    publish(args, load_settings("fleetctl", str(config)))


def abort(rec: Recorder, rid: str) -> None:
    rec.publish(f"fleetops/ota/rollouts/{rid}/command", {"action": "abort", "clientToken": f"abort-{rid}"})
    rec.wait(lambda: f"abort-{rid}" in rec.rec.commands, 30)


def create_rollout(rec: Recorder, rid: str, version: str) -> None:
    """Every device, stages 10/50/100 %, a 1 s soak, a 90 s job timeout (a job takes seconds here: a
    device whose reports were lost is timed out rather than waited for); the gates halt only on a real
    failure (half the devices failing), a stage short of 100 % at its end, or never on health."""
    token = secrets.token_hex(6)
    rec.publish(f"fleetops/ota/rollouts/{rid}/command", {
        "action": "create", "version": version, "stages": STAGES, "soak_s": 1, "success_pct": 100,
        "max_failure_pct": 50, "min_devices_for_gate": 20, "timeout_s": 90, "health_margin": 100,
        "clientToken": token})
    if not rec.wait(lambda: token in rec.rec.commands, 60):
        raise TimeoutError(f"rollout {rid}: no answer to create")
    answer = rec.rec.commands[token]
    if not answer["topic"].endswith("/accepted"):
        raise RuntimeError(f"rollout {rid}: create refused: {answer}")
