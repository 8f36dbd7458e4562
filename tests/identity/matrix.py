"""The PROTOCOL §6 access matrix, run the same way against any broker.

The expectations are written here from PROTOCOL.md (not read from acl.conf), and every check is an
observation: a publish is allowed when a reader that may see it receives it, a topic is readable when a
subscriber receives what a daemon publishes there. Denials are silent in MQTT 3.1.1 (mosquitto drops a
denied publish or delivery, amqtt answers SUBACK 0x80), so each batch ends with a sentinel sent on the
same connection after the attempts: once it arrives, every earlier message would have too.
"""

from __future__ import annotations

import os
import queue
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho

from daemons.runtime.mqtt import make_client

P, OPS = "fleet", "fleetops"
NAMED = "cfg"


def shadow_topics(device: str) -> list[str]:
    out = []
    for s in (f"{P}/{device}/shadow", f"{P}/{device}/shadow/name/{NAMED}"):
        for op in ("update", "get", "delete"):
            out += [f"{s}/{op}", f"{s}/{op}/accepted", f"{s}/{op}/rejected"]
        out += [f"{s}/update/delta", f"{s}/update/documents"]
    return out


def device_topics(device: str) -> list[str]:
    """Every topic of PROTOCOL §1-4 under one device's subtree."""
    return [*shadow_topics(device), *(f"{P}/{device}/{t}" for t in
                                      ("status", "heartbeat", "health", "logs", "ota/job", "ota/status"))]


def operator_topics(device: str) -> list[str]:
    """Every operator topic of PROTOCOL §1-5 (rollout r1, release 1.0.0, tags of `device`)."""
    out = [f"{OPS}/health/alerts", f"{OPS}/health/summary", f"{OPS}/ota/releases/1.0.0",
           f"{OPS}/ota/rollouts/r1/status", f"{OPS}/ota/rollouts/r1/events", f"{OPS}/devices/{device}/tags"]
    for request in ("shadow/bulk", "ota/releases/register", "ota/rollouts/r1/command", "debug/open"):
        out += [f"{OPS}/{request}", f"{OPS}/{request}/accepted", f"{OPS}/{request}/rejected"]
    return out


def device_may_write(device: str, topic: str) -> bool:
    """PROTOCOL §6: a device's own requests and reports, never the topics the daemons own."""
    own = [f"{P}/{device}/{t}" for t in ("status", "heartbeat", "logs", "ota/status")]
    for s in (f"{P}/{device}/shadow", f"{P}/{device}/shadow/name/{NAMED}"):
        own += [f"{s}/update", f"{s}/get"]
    return topic in own


def operator_may_write(topic: str) -> bool:
    """{o}/# and the shadow requests an operator makes (desired update, get, delete) for any device."""
    if topic.startswith(f"{OPS}/"):
        return True
    parts = topic.split("/")
    shadow_op = parts[2:3] == ["shadow"] and (len(parts) == 4 or (len(parts) == 6 and parts[3] == "name"))
    return parts[0] == P and shadow_op and parts[-1] in ("update", "get", "delete")


@dataclass
class Identity:
    """How to log in: username/password, or a client certificate (mTLS port) with CA."""

    name: str  # the device id for a device
    port: int
    username: str | None = None
    password: str | None = None
    cert: tuple[str, str] | None = None  # (certfile, keyfile)
    cafile: str | None = None


class Client:
    """A paho MQTT 3.1.1 client that reports refusals instead of retrying."""

    def __init__(self, who: Identity, client_id: str | None = None, clean: bool = True,
                 will: tuple[str, bytes] | None = None) -> None:
        self.who = who
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.granted: list[int] = []
        self._acked = threading.Event()
        self._result: queue.Queue[str] = queue.Queue()
        cid = client_id or f"{who.name}-{os.getpid()}-{id(self)}"
        c, _ = make_client(f"mqtt://127.0.0.1:{who.port}", cid, protocol=paho.MQTTv311, username=who.username,
                           password=who.password, clean_session=clean, max_inflight=1000)
        if who.cafile:
            c.tls_set(ca_certs=who.cafile, certfile=who.cert[0] if who.cert else None,
                      keyfile=who.cert[1] if who.cert else None, cert_reqs=ssl.CERT_REQUIRED)
        if will:
            c.will_set(will[0], will[1], qos=1)
        c.on_connect = lambda _c, _u, _f, rc, _p: self._result.put(
            "ok" if not rc.is_failure else f"refused {rc}")
        c.on_disconnect = lambda *a: self._result.put("lost")
        c.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload), bool(m.retain)))
        c.on_subscribe = self._on_subscribe
        self.client = c

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: Any, _p: Any) -> None:
        self.granted = [int(code.value) for code in codes]
        self._acked.set()

    def try_connect(self, timeout: float = 5.0) -> str:
        """"ok", "refused <reason>", "lost" (TLS alert, closed socket) or "error <exception>"."""
        try:
            self.client.connect("127.0.0.1", self.who.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            return f"error {exc}"
        self.client.loop_start()
        try:
            result = self._result.get(timeout=timeout)
        except queue.Empty:
            result = "timeout"
        if result != "ok":
            self.client.loop_stop()
            self.client.disconnect()
        return result

    def connect(self) -> Client:
        result = self.try_connect()
        assert result == "ok", f"{self.who.name} could not connect: {result}"
        return self

    def subscribe(self, *filters: str) -> list[int]:
        """SUBSCRIBE all filters in one packet; the granted QoS per filter (0x80 = refused)."""
        self._acked.clear()
        self.client.subscribe([(f, 1) for f in filters])
        assert self._acked.wait(10), f"{self.who.name}: no SUBACK"
        return list(self.granted)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def received_until(self, topic: str, payload: bytes | None, timeout: float = 15.0, grace: float = 0.3,
                       match: Any = None) -> list[tuple[str, bytes, bool]]:
        """Everything received up to the sentinel (topic, and payload unless None, and `match(payload)`
        if given), plus `grace` s after it."""
        out: list[tuple[str, bytes, bool]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"{self.who.name}: sentinel {topic} never arrived (positive control failed)"
            try:
                m = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            out.append(m)
            if m[0] == topic and payload in (None, m[1]) and (match is None or match(m[1])):
                break
        end = time.monotonic() + grace
        while (left := end - time.monotonic()) > 0:
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def kill(self) -> None:
        """The connection dies: no DISCONNECT (the broker sends the Last Will, if any).

        The network thread is told to stop first but not waited for: joining it waits out its 1 s
        select, 1 s per killed client."""
        self.client._thread_terminate = True  # what loop_stop sets before it joins the thread
        sock = self.client.socket()
        if sock is not None:
            sock.close()


def accepted(who: Identity) -> bool:
    """Does the broker accept this login? (The connection is closed again.)"""
    c = Client(who)
    ok = c.try_connect() == "ok"
    if ok:
        c.close()
    return ok


@dataclass
class Tally:
    """Counts of the matrix: checks tried per role and direction, breaches and wrongful denials."""

    tried: dict[tuple[str, str], int] = field(default_factory=dict)
    breaches: list[str] = field(default_factory=list)
    denied_jobs: list[str] = field(default_factory=list)

    def count(self, role: str, direction: str, n: int = 1) -> None:
        self.tried[(role, direction)] = self.tried.get((role, direction), 0) + n

    def report(self, broker: str, topics: int) -> str:
        roles = sorted({r for r, _ in self.tried})
        directions = sorted({d for _, d in self.tried if not d.endswith("wildcard")})
        wildcards = sum(n for (_, d), n in self.tried.items() if d.endswith("wildcard"))
        total = sum(self.tried.values())
        return (f"ACL matrix on {broker}: {topics} topics × {len(directions)} directions "
                f"({', '.join(directions)}) × {len(roles)} roles ({', '.join(roles)}) + {wildcards} wildcard "
                f"filters = {total} checks; breaches: {len(self.breaches)}, "
                f"legitimate operations refused: {len(self.denied_jobs)}")


@dataclass
class Roles:
    """The identities the matrix needs: devices A and B, an operator, three daemon accounts."""

    device_a: Identity
    device_b: Identity
    operator: Identity
    feeder: Identity  # a daemon account publishing everything (otaplanner)
    observer: Identity  # a daemon account reading everything (healthwatch)
    daemon: Identity  # the daemon under test (shadowsync)


def run_matrix(roles: Roles, broker: str) -> Tally:
    a, b = roles.device_a.name, roles.device_b.name  # device ids (the certificate CN for mTLS)
    topics = [*device_topics(a), *device_topics(b), *operator_topics(a)]
    tally = Tally()
    tag = f"{time.monotonic_ns()}"

    readers: dict[str, Any] = {
        "device": lambda t: t.startswith(f"{P}/{a}/"),
        "operator": lambda t: True,
        "daemon": lambda t: True,
    }
    writers: dict[str, Any] = {
        "device": lambda t: device_may_write(a, t),
        "operator": operator_may_write,
        "daemon": lambda t: True,
    }
    subjects = {"device": roles.device_a, "operator": roles.operator, "daemon": roles.daemon}
    sentinels = {"device": f"{P}/{a}/status", "operator": f"{OPS}/health/alerts", "daemon": f"{P}/{a}/health"}

    # -- publish: each subject publishes on every topic; the observer sees what got through.
    observer = Client(roles.observer).connect()
    assert observer.subscribe(f"{P}/#", f"{OPS}/#") == [1, 1]
    for role, who in subjects.items():
        c = Client(who).connect()
        for t in topics:
            c.publish(t, f"{tag}|{role}|{t}".encode())
        sentinel = f"{tag}|{role}|sentinel".encode()
        c.publish(sentinels[role], sentinel)
        got = {p.decode().split("|")[2] for _t, p, _r in observer.received_until(sentinels[role], sentinel)
               if p.startswith(f"{tag}|{role}|".encode())}
        for t in topics:
            tally.count(role, "publish")
            if t in got and not writers[role](t):
                tally.breaches.append(f"{broker}: {role} published on {t}")
            if t not in got and writers[role](t):
                tally.denied_jobs.append(f"{broker}: {role} could not publish on {t}")
        c.close()
    observer.close()

    # -- subscribe: retained then live messages on every topic; each subject subscribes to each topic
    # exactly (and the device to wildcards too) and must receive exactly what it may read.
    wildcards = ["#", "+/#", f"{P}/#", f"{P}/+/#", f"{P}/+/status", f"{P}/+/shadow/#", f"{P}/{b}/#",
                 f"{P}/+/shadow/update/delta", "+/+/ota/job", f"{P}/+/health", f"{OPS}/#", f"{OPS}/+/+",
                 f"$share/g/{P}/+/status", "$share/g/#", f"$share/shadowsync/{P}/#"]
    feeder = Client(roles.feeder).connect()
    for t in topics:
        feeder.publish(t, f"{tag}|retained|{t}".encode(), retain=True)
    clients = {}
    for role, who in subjects.items():
        c = Client(who).connect()
        filters = [*topics, f"{P}/{a}/sentinel"] + (wildcards if role == "device" else [])
        c.subscribe(*filters)
        clients[role] = c
        tally.count(role, "subscribe-wildcard", len(filters) - len(topics) - 1)
    for t in topics:
        feeder.publish(t, f"{tag}|live|{t}".encode())
    sentinel = f"{tag}|sentinel".encode()
    feeder.publish(f"{P}/{a}/sentinel", sentinel)
    for role, c in clients.items():
        received = c.received_until(f"{P}/{a}/sentinel", sentinel)
        for topic, payload, _retain in received:
            if not readers[role](topic):
                tally.breaches.append(f"{broker}: {role} received {topic} ({payload[:40]!r})")
        live = {p.decode().split("|")[2] for _t, p, _r in received if p.startswith(f"{tag}|live|".encode())}
        for t in topics:
            tally.count(role, "subscribe")
            if readers[role](t) and t not in live:
                tally.denied_jobs.append(f"{broker}: {role} did not receive {t}")
        c.close()
    for t in topics:  # leave no retained message behind
        feeder.publish(t, b"", retain=True)
    feeder.close()
    print(tally.report(broker, len(topics)))
    return tally


def takeover_leaks(port: int, victim: Identity, thief: Identity, feeder: Identity) -> tuple[bool, bool]:
    """A device's persistent session gets a message while it is offline; another device then logs in
    with its client id. Returns (the victim gets it back when it returns, the thief got anything)."""
    topic, secret = f"{P}/{victim.name}/shadow/update/delta", f"queued-{time.monotonic_ns()}".encode()
    cid = f"{victim.name}-session"

    def persistent(who: Identity, will: tuple[str, bytes] | None = None) -> Client:
        return Client(who, client_id=cid, clean=False, will=will)

    f = Client(feeder).connect()
    status = f"{P}/{victim.name}/status"
    assert f.subscribe(status) == [1]
    v = persistent(victim, will=(status, b"gone")).connect()
    assert v.subscribe(topic) == [1]
    v.kill()
    # Once the Will is out, the broker holds the session offline: the next message is queued in it.
    f.received_until(status, b"gone")
    f.publish(topic, secret)
    thief_client = persistent(thief)
    stolen: list[tuple[str, bytes, bool]] = []
    if thief_client.try_connect() == "ok":
        thief_client.subscribe(f"{P}/{thief.name}/sentinel")
        f.publish(f"{P}/{thief.name}/sentinel", b"s")
        stolen = [m for m in thief_client.received_until(f"{P}/{thief.name}/sentinel", b"s") if m[0] == topic]
        thief_client.close()
    back = persistent(victim).connect()
    back.subscribe(f"{P}/{victim.name}/sentinel")
    f.publish(f"{P}/{victim.name}/sentinel", b"s")
    got = back.received_until(f"{P}/{victim.name}/sentinel", b"s")
    back.close()
    f.close()
    return any(m[:2] == (topic, secret) for m in got), bool(stolen)


def retained_leak_on_connect(device_a: Identity, device_b: str, operator: Identity, feeder: Identity
                             ) -> list[tuple[str, bytes, bool]]:
    """What device A receives of B's retained job and status when it connects while an operator holds
    `fleet/+/...` subscriptions (amqtt 0.12 sends the retained messages of every client's filters)."""
    op = Client(operator).connect()
    op.subscribe(f"{P}/+/ota/job", f"{P}/+/status")
    f = Client(feeder).connect()
    for t in (f"{P}/{device_b}/ota/job", f"{P}/{device_b}/status"):
        f.publish(t, b"retained-of-b", retain=True)
    a = Client(device_a).connect()
    a.subscribe(f"{P}/{device_a.name}/#")
    f.publish(f"{P}/{device_a.name}/sentinel", b"s")
    got = [m for m in a.received_until(f"{P}/{device_a.name}/sentinel", b"s") if device_b in m[0]]
    for t in (f"{P}/{device_b}/ota/job", f"{P}/{device_b}/status"):
        f.publish(t, b"", retain=True)
    for c in (a, f, op):
        c.close()
    return got


def will_breaches(device_a: Identity, device_b: str, observer: Identity) -> tuple[int, list[str]]:
    """Device A tries, one connection each, a Last Will on topics it may not write; the observer (a
    daemon reading everything) must never see one. A Will on its own status is the positive control.
    Returns (Wills tried, breaches)."""
    a = device_a.name
    forbidden = [f"{P}/{device_b}/status", f"{P}/{device_b}/ota/job", f"{P}/{device_b}/shadow/update",
                 f"{P}/{a}/ota/job", f"{P}/{a}/health", f"{P}/{a}/shadow/update/accepted",
                 f"{P}/{a}/shadow/update/delta", f"{OPS}/ota/rollouts/r1/command", f"{OPS}/shadow/bulk"]
    obs = Client(observer).connect()
    obs.subscribe(f"{P}/#", f"{OPS}/#")
    tag = f"will-{time.monotonic_ns()}".encode()
    for topic in forbidden:
        c = Client(device_a, will=(topic, tag))
        if c.try_connect() == "ok":
            c.kill()
    control = Client(device_a, will=(f"{P}/{a}/status", tag + b"-control")).connect()
    control.kill()
    got = obs.received_until(f"{P}/{a}/status", tag + b"-control")
    obs.close()
    return len(forbidden), [f"Will on {t}" for t, p, _r in got if p == tag]
