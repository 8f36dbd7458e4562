"""What the system's topics say, recorded for the chaos checks: an operator-side MQTT client.

One MQTT 3.1.1 client with a persistent session (so a broker restart loses nothing of what it was
sent) subscribed to every answer and progress topic; it also publishes the operator's requests.
It records, with the arrival time (time.monotonic()):
- every `shadow/update/accepted|rejected` answer per device: version and clientToken;
- every heartbeat's `seq` per device and when it first came (what the broker accepted from it);
- every distinct non-empty `ota/job` payload per device and job id, every `ota/status` per job;
- every device's fresh `status` online (`ts`) and the last rollout status of each rollout.
"""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from daemons.protocol.codec import CodecError, decode
from daemons.runtime.mqtt import make_client


@dataclass
class Answer:
    device: str
    accepted: bool
    version: int | None
    token: str | None
    at: float
    code: int | None = None


@dataclass
class Record:
    answers: list[Answer] = field(default_factory=list)
    by_token: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    heartbeats: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))  # seq -> at
    jobs: dict[tuple[str, str], set[bytes]] = field(default_factory=lambda: defaultdict(set))
    ota: dict[tuple[str, str], set[bytes]] = field(default_factory=lambda: defaultdict(set))
    succeeded: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # job id -> devices
    online_ts: dict[str, tuple[int, float]] = field(default_factory=dict)  # device -> (status ts, arrival)
    online_log: list[tuple[float, str, int]] = field(default_factory=list)  # (arrival, device, status ts)
    rollouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: list[tuple[float, str, int]] = field(default_factory=list)  # (arrival, rollout, succeeded)
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)  # clientToken -> answer


class Recorder:
    def __init__(self, url: str, prefix: str = "fleet", ops: str = "fleetops") -> None:
        self.p, self.o = prefix, ops
        self.rec = Record()
        self.cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client, addr = make_client(url, f"chaos-recorder-{os.getpid()}", protocol=paho.MQTTv311,
                                        clean_session=False, max_inflight=1000)
        self.client.reconnect_delay_set(1, 2)  # paho's default backs off to 120 s: a restart is short
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(addr.host, addr.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            raise TimeoutError(f"no SUBACK from {url}")

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, _r: Any, _p: Any) -> None:
        if flags.session_present and self._subscribed.is_set():
            return  # the broker kept the subscriptions and queued what came meanwhile
        p, o = self.p, self.o
        client.subscribe([(t, 1) for t in (
            f"{p}/+/shadow/update/accepted", f"{p}/+/shadow/update/rejected", f"{p}/+/heartbeat",
            f"{p}/+/ota/job", f"{p}/+/ota/status", f"{p}/+/status", f"{o}/ota/rollouts/+/status",
            f"{o}/ota/rollouts/+/command/+")])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        """QoS 1; paho keeps it across a broker restart and sends it once connected again."""
        self.client.publish(topic, json.dumps(body), qos=1)

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        payload = bytes(msg.payload)
        parts = msg.topic.split("/")
        try:
            body = decode(payload)[0] if payload else {}
        except CodecError:
            return
        with self.cond:
            self._fold(parts, payload, body, now)
            self.cond.notify_all()

    def _fold(self, parts: list[str], payload: bytes, body: dict[str, Any], now: float) -> None:
        r = self.rec
        if parts[0] == self.o:
            if parts[-1] == "status":
                r.rollouts[parts[3]] = body
                r.progress.append((now, parts[3], int((body.get("counts") or {}).get("succeeded", 0))))
            elif "clientToken" in body:
                r.commands[str(body["clientToken"])] = {"topic": "/".join(parts), **body}
            return
        device, rest = parts[1], "/".join(parts[2:])
        if rest in ("shadow/update/accepted", "shadow/update/rejected"):
            token = body.get("clientToken")
            a = Answer(device, rest.endswith("accepted"), body.get("version"),
                       token if isinstance(token, str) else None, now, body.get("code"))
            r.answers.append(a)
            if a.token is not None:
                r.by_token[a.token].append(a)
        elif rest == "heartbeat":
            if isinstance(body.get("seq"), int):
                r.heartbeats[device].setdefault(body["seq"], now)
        elif rest == "ota/job":
            if payload:
                r.jobs[(device, str(body.get("job_id")))].add(payload)
        elif rest == "ota/status":
            job = str(body.get("job_id"))
            r.ota[(device, job)].add(payload)
            if body.get("state") == "succeeded":
                r.succeeded[job].add(device)
        elif rest == "status" and body.get("online") is True and isinstance(body.get("ts"), int):
            r.online_ts[device] = (body["ts"], now)
            r.online_log.append((now, device, body["ts"]))

    # -- readings (under the condition's lock) ----------------------------------------------------

    def progress_after(self, rid: str, t: float, above: int) -> float | None:
        """Arrival of the first status of `rid` after `t` with more than `above` devices succeeded."""
        with self.cond:  # arrival times only grow
            i = bisect.bisect_right(self.rec.progress, (t, "", 0))
            return next((at for at, r, n in self.rec.progress[i:] if r == rid and n > above), None)

    def back_online(self, wall: float) -> dict[str, float]:
        """Each device's first online status with a `ts` from `wall` (epoch s) on: its arrival."""
        out: dict[str, float] = {}
        with self.cond:
            for at, device, ts in self.rec.online_log:
                if ts >= int(wall):
                    out.setdefault(device, at)
        return out

    def online_since(self, wall: float) -> int:
        """Devices whose latest status is online with a `ts` from `wall` (epoch s) on."""
        with self.cond:
            return sum(1 for ts, _ in self.rec.online_ts.values() if ts >= int(wall))
