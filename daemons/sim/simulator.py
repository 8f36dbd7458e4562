"""A simulated fleet for `make run`: heartbeats, presence, shadows that converge, OTA jobs.

One MQTT connection speaks for every simulated device (a demo, not a load test): each device
announces itself, sends heartbeats with noisy telemetry (a few drift, so healthwatch has
something to find), answers every shadow delta by reporting the desired values, and installs
OTA jobs with the device model of otaplanner (verify, download, trial boot). An image whose
version contains "bad" fails its self-test and rolls back, so a halting rollout can be shown.
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from daemons.protocol.codec import decode, encode
from daemons.protocol.errors import ConfigError
from daemons.runtime.config import load_settings
from daemons.runtime.mqtt import make_client
from daemons.runtime.prefixes import probe_prefix
from daemons.sim.device_model import DeviceModel
from otaplanner.signing import Signer


def _bad_image(device_id: str, manifest: dict[str, Any]) -> bool:
    return "bad" in str(manifest.get("version", ""))


@dataclass
class DemoDevice:
    device_id: str
    hw: str
    fw: str = "1.0.0"
    temp_offset: float = 0.0
    drift_c_per_h: float = 0.0
    battery_mv: float = 4100.0
    reported: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    hb_seq: int = 0
    debug_until: float = 0.0  # desired debug.until: stream logs until then (§4)
    booted_at: float = field(default_factory=time.time)
    model: DeviceModel | None = None

    def heartbeat(self, now: float) -> dict[str, Any]:
        self.hb_seq += 1
        hours = (now - self.booted_at) / 3600
        self.battery_mv -= random.uniform(0.0, 0.4)
        return {
            "ts": int(now), "seq": self.hb_seq, "uptime_s": int(now - self.booted_at), "fw": self.fw,
            "slot": 0, "hw": self.hw,
            "battery_mv": int(self.battery_mv),
            "battery_pct": max(0, min(100, int((self.battery_mv - 3300) / 9))),
            "rssi_dbm": int(-60 + random.gauss(0, 3)),
            "temp_c": round(38 + self.temp_offset + 2 * math.sin(now / 3600) + self.drift_c_per_h * hours
                            + random.gauss(0, 0.3), 2),
            "heap_free": int(180_000 + random.gauss(0, 2000)), "heap_min_free": 150_000,
            "reset_reason": "poweron",
        }


class Fleet:
    def __init__(self, url: str, prefix: str, count: int, interval_s: float) -> None:
        self.prefix = prefix
        self.interval_s = interval_s
        rng = random.Random(7)
        self.devices = {
            f"sim-{i:04d}": DemoDevice(f"sim-{i:04d}", "esp32c3" if i % 3 else "esp32s3",
                                      temp_offset=rng.gauss(0, 1.0),
                                      drift_c_per_h=30.0 if i in (3, 11) else 0.0)
            for i in range(count)
        }
        # mqtts:// is honoured (TLS), which the hand-built client here used to ignore.
        self.client, addr = make_client(url, f"simulator-{prefix}", max_inflight=1000)
        self.status_ts = 0  # ts of the last status published
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(addr.host, addr.port, keepalive=30)
        self.stop = threading.Event()
        self._attach_models()

    def _attach_models(self) -> None:
        try:
            signer = Signer.from_settings(load_settings("simulator"))
        except Exception as exc:  # no OTA keys configured: the fleet runs without OTA
            print(f"simulator: OTA disabled ({exc})", file=sys.stderr)
            return
        for d in self.devices.values():
            d.model = DeviceModel(d.device_id, d.hw, d.fw, signer.verifier(d.device_id),
                                  selftest_fails=_bad_image)

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe(f"{self.prefix}/+/shadow/update/delta", qos=1)
        client.subscribe(f"{self.prefix}/+/ota/job", qos=1)
        # A fresh ts on every connection (PROTOCOL §4), even two within one second.
        self.status_ts = max(int(time.time()), self.status_ts + 1)
        for d in self.devices.values():
            client.publish(f"{self.prefix}/{d.device_id}/status",
                           encode({"online": True, "fw": d.fw, "ts": self.status_ts}), qos=1, retain=True)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/ota/job"):
            device = self.devices.get(msg.topic.split("/")[-3])
            if device is not None and device.model is not None and msg.payload:
                # Downloads take time: never in the network thread.
                threading.Thread(target=self._install, args=(device, bytes(msg.payload)), daemon=True).start()
            return
        device_id = msg.topic.split("/")[-5] if "/name/" in msg.topic else msg.topic.split("/")[-4]
        device = self.devices.get(device_id)
        if device is None or "/name/" in msg.topic:
            return
        try:
            body, encoding = decode(bytes(msg.payload))
        except ValueError:
            return
        delta = body.get("state")
        if isinstance(delta, dict):
            debug = delta.get("debug")
            if isinstance(debug, dict) and isinstance(debug.get("until"), int | float):
                device.debug_until = float(debug["until"]) if debug.get("enabled", True) else 0.0
            device.reported.update(delta)
            device.seq += 1
            client.publish(f"{self.prefix}/{device_id}/shadow/update",
                           encode({"state": {"reported": delta}, "seq": device.seq}, encoding), qos=1)

    def _install(self, device: DemoDevice, payload: bytes) -> None:
        assert device.model is not None
        try:
            job, _ = decode(payload)
        except ValueError:
            return
        topic = f"{self.prefix}/{device.device_id}/ota/status"

        def emit(status: dict[str, Any]) -> None:
            self.client.publish(topic, encode(status), qos=1)

        device.model.handle_job(job, emit=emit)  # a "bad" image rolls back inside
        for status in device.model.heartbeat_acked():  # the new image heartbeats: confirmed
            emit(status)
        device.fw = device.model.version

    def run(self) -> None:
        self.client.loop_start()
        try:
            while not self.stop.is_set():
                now = time.time()
                for d in self.devices.values():
                    beat = d.heartbeat(now)
                    self.client.publish(f"{self.prefix}/{d.device_id}/heartbeat", encode(beat), qos=1)
                    if now < d.debug_until:  # a debug session is open: stream a few log lines (QoS 0)
                        lines = [f"I (uptime {beat['uptime_s']} s) temp {beat['temp_c']} C, "
                                 f"heap {beat['heap_free']} B, rssi {beat['rssi_dbm']} dBm"]
                        self.client.publish(f"{self.prefix}/{d.device_id}/logs",
                                            encode({"lines": lines, "dropped": 0, "dropped_total": 0,
                                                    "ts": int(now)}), qos=0)
                self.stop.wait(self.interval_s)
        finally:
            for d in self.devices.values():
                self.client.publish(f"{self.prefix}/{d.device_id}/status", encode({"online": False}), qos=1,
                                    retain=True)
            self.client.disconnect()
            self.client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet-simulator", description="a simulated ESP32 fleet")
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--prefix", default="fleet")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between heartbeats")
    args = parser.parse_args(argv)
    if args.prefix.startswith("$"):
        try:  # a '$' prefix the broker drops (amqtt) is refused here, not found as a silent fleet
            probe_prefix(args.mqtt_url, args.prefix, "--prefix")
        except ConfigError as exc:
            print(f"fleet-simulator: {exc}", file=sys.stderr)
            return 2
    fleet = Fleet(args.mqtt_url, args.prefix, args.devices, args.interval)
    signal.signal(signal.SIGTERM, lambda *a: fleet.stop.set())
    signal.signal(signal.SIGINT, lambda *a: fleet.stop.set())
    fleet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
