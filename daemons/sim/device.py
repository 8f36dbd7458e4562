"""One simulated device on its own MQTT connection: the device side of PROTOCOL.md.

Presence (§4: a retained status with a fresh `ts` on every connect, `{"online": false}` as the Last
Will), the classic and named shadows (§1: a get on every connect, deltas applied once each by
version and reported with a monotonic `seq`), heartbeats with the vitals of daemons.sim.heartbeats
(§2), OTA jobs through daemons.sim.device_model (§3: verify, Range download, A/B slots, a trial boot
confirmed by an acknowledged heartbeat, rollback) and log lines while the desired `debug.until` is in
the future (§4). Payloads in the device's own encoding, JSON or MessagePack.

The device never blocks: paho runs on the fleet's asyncio loop through its external-loop API
(`Binding` in daemons.sim.fleet) and OTA downloads run in the fleet's thread pool. Every method
runs on the loop thread except `_install`.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from daemons.protocol.codec import CodecError, Encoding, decode, encode
from daemons.runtime.mqtt import make_client
from daemons.sim.device_model import TRIAL_S, DeviceModel, Status
from daemons.sim.heartbeats import SimDevice, ambient

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
CONNECT_TIMEOUT_S = 2.0
LOG_PERIOD_S = 1.0  # one batch of log lines a second while a debug session is open
FLAKY_DROP_P = 0.1  # a flaky link drops the connection on about one heartbeat in ten


@dataclass
class Stats:
    """Counters of one simulator process (printed as JSON lines; the scenario never reads them)."""

    online: int = 0
    connects: int = 0
    disconnects: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    deltas_applied: int = 0
    jobs: int = 0

    def count(self, kind: str) -> None:
        self.sent[kind] = self.sent.get(kind, 0) + 1


@dataclass
class FleetContext:
    """What every device of one simulator process shares."""

    loop: asyncio.AbstractEventLoop
    executor: Executor
    bind: Callable[[paho.Client], None]  # attaches a client's socket to the loop
    url: str  # mqtt://host:port or mqtts://
    prefix: str
    interval_s: float
    scale: float  # simulated seconds per real second (60 / interval: one heartbeat = one minute)
    epoch: float  # wall clock at simulated time 0
    started: float  # loop time at simulated time 0
    named_shadows: tuple[str, ...]
    keepalive: int = 30
    stats: Stats = field(default_factory=Stats)
    stopping: bool = False

    def sim_time(self) -> float:
        return (self.loop.time() - self.started) * self.scale


class Device:
    def __init__(self, ctx: FleetContext, vitals: SimDevice, model: DeviceModel | None,
                 encoding: Encoding, fault: str | None, password: str | None, rng: random.Random) -> None:
        self.ctx = ctx
        self.id = vitals.device_id
        self.vitals = vitals
        self.model = model
        self.encoding: Encoding = encoding
        self.fault = fault
        self.rng = rng
        self.base = f"{ctx.prefix}/{self.id}"
        self.seq = 0  # of reported updates: monotonic across reconnects (§1 stale reports)
        self.versions: dict[str, int] = {}  # shadow name ("" = classic) -> last version applied
        self.reported: dict[str, dict[str, Any]] = {}
        self.debug_until = 0.0
        self.connected = False
        self.connects = 0
        self.status_ts = 0  # ts of the last status: strictly increasing, one per connection (§4)
        self.subscribed = False  # SUBACK received in the current session
        self.dead = False  # silent_death: gone for good
        self.attempts = 0
        self.next_delay: float | None = None  # set by a reboot: reconnect after this, not the backoff
        self.last_boot = vitals.boot
        self.pending_beat: dict[str, Any] | None = None  # taken before a reboot, sent after it
        self.ota_busy = False
        self.next_job: Any = None
        self.trial_mid: int | None = None
        self.trial_timer: asyncio.TimerHandle | None = None
        self.log_timer: asyncio.TimerHandle | None = None
        # Devices speak MQTT 3.1.1 as esp-mqtt does by default; a persistent session per client id.
        c, addr = make_client(ctx.url, self.id, protocol=paho.MQTTv311, clean_session=False, max_inflight=100,
                              username=self.id if password is not None else None, password=password)
        c.will_set(f"{self.base}/status", encode({"online": False}, encoding), qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.connect_timeout = CONNECT_TIMEOUT_S  # the TCP connect blocks the loop: keep a stall short
        ctx.bind(c)
        c.connect_async(addr.host, addr.port, keepalive=ctx.keepalive)
        self.client = c

    # -- connection ----------------------------------------------------------------------------------

    def connect(self) -> None:
        """One connection attempt (TCP connect is blocking, fast on a LAN); retried with backoff."""
        if self.ctx.stopping or self.dead or self.connected:
            return
        try:
            self.client.reconnect()
        except (OSError, ValueError):
            self._retry()

    def _retry(self) -> None:
        # Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): a broker restart does
        # not bring the whole fleet back in one instant.
        delay = self.next_delay
        self.next_delay = None
        if delay is None:
            delay = self.rng.uniform(BACKOFF_MIN_S, min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** self.attempts))
            self.attempts = min(self.attempts + 1, 16)
        self.ctx.loop.call_later(delay, self.connect)

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return  # paho closes the socket; _on_disconnect retries
        self.connected = True
        self.connects += 1
        self.attempts = 0
        self.ctx.stats.online += 1
        self.ctx.stats.connects += 1
        # The persistent session keeps the subscriptions, once the broker has acknowledged them: a link
        # that broke between CONNACK and SUBACK leaves a session without them.
        if not (flags.session_present and self.subscribed):
            subs = ["shadow/update/delta", "shadow/get/accepted", "ota/job"]
            if self.ctx.named_shadows:
                subs += ["shadow/name/+/update/delta", "shadow/name/+/get/accepted"]
            self.subscribed = False
            client.subscribe([(f"{self.base}/{s}", 1) for s in subs])
        # Fresh even for two connections within one second: shadow-sync tells a new connection
        # from a redelivered retained status by it.
        self.status_ts = max(int(time.time()), self.status_ts + 1)
        self._send("status", {"online": True, "fw": self._fw(), "ts": self.status_ts}, retain=True)
        self._send("shadow/get", {})
        for name in self.ctx.named_shadows:
            self._send(f"shadow/name/{name}/get", {})
        if self.model is not None and self.model.trial is not None:
            self._trial_beat()
        elif self.pending_beat is not None:
            self._send("heartbeat", self.pending_beat)
        elif self.connects == 1:
            self._tick()  # as firmware does: a heartbeat right after boot, then on the timer
        self.pending_beat = None

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        self.subscribed = not any(getattr(c, "is_failure", False) for c in codes)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _r: Any, _p: Any) -> None:
        if self.connected:
            self.connected = False
            self.ctx.stats.online -= 1
            self.ctx.stats.disconnects += 1
        if not self.ctx.stopping and not self.dead:
            self._retry()

    def drop(self, abrupt: bool = True, delay: float | None = None) -> None:
        """Lose the connection: abruptly (a crash or a broken link: the broker sends the Last Will)
        or with a DISCONNECT (a planned reboot). Reconnects after `delay`, else with the backoff."""
        if not self.connected:
            return
        self.next_delay = delay
        sock = self.client.socket()
        if abrupt and isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)  # paho reads EOF next and reports the loss
        else:
            self.client.disconnect()

    def stop(self) -> None:
        """Power off: offline status (what the Last Will would say), then a clean DISCONNECT."""
        if self.connected:
            self._send("status", {"online": False}, retain=True)
            self.client.disconnect()

    # -- publishing ----------------------------------------------------------------------------------

    def _fw(self) -> str:
        return self.model.version if self.model is not None else self.vitals.fw

    def _send(self, suffix: str, body: dict[str, Any], qos: int = 1, retain: bool = False) -> int:
        info = self.client.publish(f"{self.base}/{suffix}", encode(body, self.encoding), qos=qos,
                                   retain=retain)
        if suffix.startswith("shadow/name/"):  # counted together: shadow/name/update, shadow/name/get
            suffix = "shadow/name/" + suffix.split("/", 3)[3]
        self.ctx.stats.count(suffix)
        return info.mid

    def _report(self, name: str, state: dict[str, Any]) -> None:
        # seq only grows, also across simulator restarts (millisecond clock as a floor).
        self.seq = max(self.seq + 1, int(time.time() * 1000))
        topic = "shadow/update" if not name else f"shadow/name/{name}/update"
        self._send(topic, {"state": {"reported": state}, "seq": self.seq})

    # -- heartbeats ----------------------------------------------------------------------------------

    def beat(self) -> None:
        """The heartbeat timer (every interval, from a random phase); reschedules itself."""
        if self.dead or self.ctx.stopping:
            return
        self.ctx.loop.call_later(self.ctx.interval_s, self.beat)
        self._tick()

    def _tick(self) -> None:
        """One heartbeat: vitals, faults, reboots."""
        t = self.ctx.sim_time()
        hb = self.vitals.heartbeat(t, ambient(t), self.ctx.epoch)
        if self.vitals.fault == "silent_death" and t >= self.vitals.fault_at:
            self.dead = True  # dies where it stands: the broker sends its Last Will
            self.drop(abrupt=True)
            return
        rebooted = self.vitals.boot != self.last_boot
        self.last_boot = self.vitals.boot
        if hb is None:
            return
        if self.model is not None:
            hb["fw"], hb["slot"] = self.model.version, f"ota_{self.model.active}"
        if rebooted and not self.ota_busy and self.model is not None and self.model.trial is None:
            self.pending_beat = hb  # a crash: the Last Will, then back after a short boot
            self.drop(abrupt=True, delay=self.rng.uniform(0.5, 1.5))
            return
        if not self.connected:
            return  # nothing is buffered: healthwatch sees the gap in seq
        mid = self._send("heartbeat", hb)
        if self.model is not None and self.model.trial is not None:
            # Any acknowledged heartbeat of the new image confirms it (§3), not only the one sent on
            # connect: that one may be lost on the way, and the trial would then expire for nothing.
            self.trial_mid = mid
        if self.fault == "flaky_link" and self.rng.random() < FLAKY_DROP_P:
            self.drop(abrupt=True)

    # -- messages ------------------------------------------------------------------------------------

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        rest = msg.topic[len(self.base) + 1:]
        if rest == "ota/job":
            self._job(bytes(msg.payload))
            return
        try:
            body, _ = decode(bytes(msg.payload))
        except CodecError:
            return
        name = ""
        if rest.startswith("shadow/name/"):
            name, _, rest = rest[len("shadow/name/"):].partition("/")
        else:
            rest = rest[len("shadow/"):]
        state = body.get("state")
        if rest == "get/accepted" and isinstance(state, dict):
            state = state.get("delta")
        if isinstance(state, dict) and state:
            self._apply(name, state, body.get("version"))

    def _apply(self, name: str, delta: dict[str, Any], version: Any) -> None:
        """Apply a delta once: the same version again (the get and the reconnect delta) is ignored."""
        if isinstance(version, int):
            if version <= self.versions.get(name, 0):
                return
            self.versions[name] = version
        self.reported.setdefault(name, {}).update(delta)
        self.ctx.stats.deltas_applied += 1
        debug = delta.get("debug")
        if not name and isinstance(debug, dict):
            until = debug.get("until")
            enabled = debug.get("enabled", True) and isinstance(until, int | float)
            self.debug_until = float(until) if enabled else 0.0  # type: ignore[arg-type]
            if self.debug_until > time.time() and self.log_timer is None:
                self._log_tick()
        self._report(name, delta)

    def _log_tick(self) -> None:
        self.log_timer = None
        now = time.time()
        if now >= self.debug_until or self.dead or self.ctx.stopping:
            return  # stops by itself at `until`, even when cut off (§4)
        if self.connected:
            v = self.vitals
            self._send("logs", {"lines": [f"I ({int(now)}) app: seq {v.seq}, {self._fw()}, reset {v.reset}",
                                          f"D ({int(now)}) wifi: rssi {int(v.rssi)} dBm"],
                                "dropped": 0, "dropped_total": 0, "ts": int(now)}, qos=0)
        self.log_timer = self.ctx.loop.call_later(LOG_PERIOD_S, self._log_tick)

    # -- OTA -----------------------------------------------------------------------------------------

    def _job(self, payload: bytes) -> None:
        if self.model is None or not payload:
            return  # no keys to verify with, or a withdrawn job
        try:
            job: Any = decode(payload)[0]
        except CodecError:
            job = {}  # the model answers it: rejected
        self._start_job(job)

    def _start_job(self, job: Any) -> None:
        assert self.model is not None
        if self.ota_busy or self.model.trial is not None:
            self.next_job = job  # the model answers it once the current one is over
            return
        self.ota_busy = True
        self.ctx.stats.jobs += 1
        fut = self.ctx.loop.run_in_executor(self.ctx.executor, self._install, job)
        fut.add_done_callback(lambda _f: self._installed())

    def _install(self, job: Any) -> None:
        """In the thread pool: the model verifies, downloads (Range) and writes the slot."""
        assert self.model is not None
        loop = self.ctx.loop

        def emit(status: Status) -> None:
            loop.call_soon_threadsafe(self._ota_status, status)

        self.model.handle_job(job, emit=emit)

    def _ota_status(self, status: Status) -> None:
        self._send("ota/status", status)

    def _installed(self) -> None:
        assert self.model is not None
        self.ota_busy = False
        self.vitals.fw = self.model.version
        if self.model.trial is not None:
            # The new image boots on trial: a planned reboot, then a heartbeat that must be acked.
            self.trial_timer = self.ctx.loop.call_later(TRIAL_S, self._trial_expired)
            if self.connected:
                self.drop(abrupt=False, delay=self.rng.uniform(0.2, 1.0))
            return
        self._next_job()

    def _trial_beat(self) -> None:
        hb = self.vitals.heartbeat(self.ctx.sim_time(), ambient(self.ctx.sim_time()), self.ctx.epoch)
        if hb is not None:
            assert self.model is not None
            hb["fw"], hb["slot"] = self.model.version, f"ota_{self.model.active}"
            self.trial_mid = self._send("heartbeat", hb)

    def _on_publish(self, _c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
        if mid == self.trial_mid and self.model is not None and self.model.trial is not None:
            self.trial_mid = None
            self._trial_over(self.model.heartbeat_acked())

    def _trial_expired(self) -> None:
        if self.model is not None and self.model.trial is not None:
            self._trial_over(self.model.trial_failed())

    def _trial_over(self, statuses: list[Status]) -> None:
        assert self.model is not None
        if self.trial_timer is not None:
            self.trial_timer.cancel()
            self.trial_timer = None
        self.vitals.fw = self.model.version
        for status in statuses:
            self._ota_status(status)
        self._next_job()

    def _next_job(self) -> None:
        job, self.next_job = self.next_job, None
        if job is not None:
            self._start_job(job)
