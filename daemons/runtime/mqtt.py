"""The daemons' MQTT session on paho-mqtt 2.x.

- MQTT 5 when the broker speaks it, 3.1.1 otherwise (amqtt 0.12 is 3.1.1 only).
- Persistent session (clean_start false, session expiry) and manual acknowledgement: a QoS 1
  message is PUBACKed only when the run loop says its effect is durable, so a crash means
  redelivery, never loss.
- `$share/<daemon>/` subscriptions when the broker offers them, so replicas split the load
  (never for `$` topics: see prefixes.py).
"""

from __future__ import annotations

import collections
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from daemons.protocol.errors import FleetError
from daemons.protocol.messages import Inbound, Publish
from daemons.runtime.config import Settings

PROTOCOLS: dict[str, MQTTProtocolVersion] = {"5": paho.MQTTv5, "3.1.1": paho.MQTTv311}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883, TLS) points."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        u = urlparse(url)
        if u.scheme not in ("mqtt", "mqtts"):
            raise FleetError(f"not an MQTT URL (mqtt:// or mqtts://): {url!r}")
        tls = u.scheme == "mqtts"
        return cls(u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883), tls)


def dealt(topic: str, shared: bool) -> bool:
    """Whether the broker deals the messages of `topic` (a filter or a message's topic) to one
    replica: when the session is shared, except `$` topics.

    A `$` topic is subscribed plainly: mosquitto 2.0 never delivers one through a shared subscription
    (runtime/prefixes.py), so every replica sees each of its messages (daemons.runtime.replicas
    then decides which replica handles it, as on a 3.1.1 broker).
    """
    return shared and not topic.startswith("$")


def subscription_filter(topic: str, group: str, shared: bool) -> str:
    """The filter to SUBSCRIBE for `topic`: `$share/<group>/<topic>` when `dealt`, else `topic`."""
    return f"$share/{group}/{topic}" if dealt(topic, shared) else topic


def make_client(url: str, client_id: str = "", *, protocol: MQTTProtocolVersion | str = paho.MQTTv5,
                username: str | None = None, password: str | None = None,
                clean_session: bool | None = None, manual_ack: bool = False,
                max_inflight: int | None = None) -> tuple[paho.Client, BrokerAddress]:
    """A paho client (callback API 2) set up for the broker at `url`, not connected yet.

    The one place for what every client of the fleet needs: TLS with the system's CAs for
    `mqtts://`, credentials, protocol (`paho.MQTTv5`/`MQTTv311`, or "5"/"3.1.1" as in settings),
    an in-flight window (paho scans it on every PUBACK: keep it modest on busy clients) and no
    client-side queue limit. `clean_session` applies to MQTT 3.1.1 only (MQTT 5 sets clean_start
    on connect). Returns the client and the address to `connect(addr.host, addr.port, ...)` to.
    """
    addr = BrokerAddress.parse(url)
    version = PROTOCOLS[protocol] if isinstance(protocol, str) else protocol
    v5 = version == paho.MQTTv5
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version,
                         clean_session=None if v5 else clean_session, manual_ack=manual_ack)
    if username:
        client.username_pw_set(username, password)
    if addr.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    if max_inflight is not None:
        client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    return client, addr


def client_for(settings: Settings, client_id: str, protocol: MQTTProtocolVersion | str = paho.MQTTv311,
               **options: Any) -> tuple[paho.Client, BrokerAddress]:
    """`make_client` for the broker, credentials and protocol of the settings (`auto`: `protocol`)."""
    wanted = settings.mqtt_protocol if settings.mqtt_protocol != "auto" else protocol
    return make_client(settings.mqtt_url, client_id, protocol=wanted, username=settings.mqtt_username,
                       password=settings.mqtt_password, **options)


@dataclass(frozen=True, slots=True)
class AckToken:
    generation: int
    mid: int
    qos: int


@dataclass(slots=True)
class _Pending:
    """A handled batch whose PUBACKs wait until the broker has taken every answer it caused."""

    inbound: list[Inbound]
    waiting: set[int]


class MqttSession:
    """One broker connection feeding a queue of `Inbound` messages."""

    def __init__(self, settings: Settings, daemon: str, topics: list[str], client_id: str | None = None,
                 on_connection: Callable[[bool], None] | None = None) -> None:
        """`on_connection(up)`: called from paho's thread on every CONNACK (True) and loss (False)."""
        self.settings = settings
        self.on_connection = on_connection
        self.daemon = daemon
        self.topics = topics
        self.client_id = client_id or settings.client_id_for(daemon)
        self.inbox: queue.Queue[Inbound] = queue.Queue()
        self.protocol_version = 0
        self.shared = False
        self._generation = 0
        self._connected = threading.Event()
        self._connack: tuple[bool, int] | None = None
        self._connack_event = threading.Event()
        self._client: paho.Client | None = None
        self._lock = threading.Lock()
        self._attempt_v5 = False
        # Confirmed outgoing mids, filled by paho's network thread and consumed by the run loop:
        # paho calls on_publish holding its own lock, so no lock of ours is taken there.
        self._confirmed: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._pending: collections.deque[_Pending] = collections.deque()
        self._waiting_mids: dict[int, _Pending] = {}
        self._reconnected = threading.Event()
        # Set once the broker has granted every subscription (SUBACK), cleared on disconnect.
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self.refused_topics: list[str] = []
        # Broker round trips of QoS 1 publishes (send to PUBACK), reported in seconds.
        self.on_round_trip: Callable[[float], None] | None = None
        self._sent_at: dict[int, float] = {}

    # -- connection -------------------------------------------------------------------------

    def connect(self, timeout: float = 15.0) -> None:
        """Connect (MQTT 5 first when allowed), subscribe, and start the network thread."""
        wanted = self.settings.mqtt_protocol
        attempts = [paho.MQTTv5, paho.MQTTv311] if wanted == "auto" else (
            [paho.MQTTv5] if wanted == "5" else [paho.MQTTv311])
        last_error = "no attempt"
        for protocol in attempts:
            # A 3.1.1-only broker may never answer an MQTT 5 CONNECT: don't wait long for it.
            wait = min(timeout, 3.0) if protocol == paho.MQTTv5 and len(attempts) > 1 else timeout
            ok, last_error = self._try_connect(protocol, wait)
            if ok:
                return
        raise FleetError(f"cannot connect to {self.settings.mqtt_url}: {last_error}")

    def _try_connect(self, protocol: MQTTProtocolVersion, timeout: float) -> tuple[bool, str]:
        v5 = protocol == paho.MQTTv5
        # paho scans the whole in-flight window on every PUBACK: a modest window is faster.
        client, addr = make_client(self.settings.mqtt_url, self.client_id, protocol=protocol,
                                   username=self.settings.mqtt_username, password=self.settings.mqtt_password,
                                   clean_session=False, manual_ack=True, max_inflight=100)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._connack = None
        self._connack_event.clear()
        self._attempt_v5 = v5
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.session_expiry_s
            props.ReceiveMaximum = min(65535, max(100, 2 * self.settings.batch_max))
        try:
            client.connect(addr.host, addr.port, keepalive=30,
                           clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                           properties=props)
        except (OSError, ValueError) as exc:
            return False, str(exc)
        client.loop_start()
        if not self._connack_event.wait(timeout) or self._connack is None or not self._connack[0]:
            reason = "no CONNACK" if self._connack is None else f"refused (reason {self._connack[1]})"
            client.loop_stop()
            client.disconnect()
            return False, reason
        self._client = client
        self.protocol_version = 5 if v5 else 4
        return True, ""

    def _on_connect(self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags, reason: ReasonCode,
                    props: Properties | None) -> None:
        ok = not reason.is_failure
        self._connack = (ok, int(reason.value))
        if ok:
            with self._lock:
                self._generation += 1
            self._reconnected.set()
            self.shared = self._shared_allowed(props)
            self._subscribed.clear()
            if self.topics:
                _, self._subscribe_mid = client.subscribe(
                    [(self.subscription(topic), 1) for topic in self.topics])
            else:
                self._subscribed.set()
            self._connected.set()
            if self.on_connection is not None:
                self.on_connection(True)
        self._connack_event.set()

    def _shared_allowed(self, props: Properties | None) -> bool:
        mode = self.settings.shared_subscriptions
        if mode != "auto":
            return mode == "on"
        if self._attempt_v5:
            # MQTT 5: the property is absent when the broker offers shared subscriptions.
            return bool(getattr(props, "SharedSubscriptionAvailable", 1))
        return False  # MQTT 3.1.1 cannot tell; amqtt, for one, has none.

    def subscription(self, topic: str) -> str:
        return subscription_filter(topic, self.daemon, self.shared)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      props: Properties | None) -> None:
        if mid != self._subscribe_mid:
            return
        self.refused_topics = [t for t, r in zip(self.topics, reasons, strict=False) if r.is_failure]
        if not self.refused_topics:
            self._subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags,
                       reason: ReasonCode, props: Properties | None) -> None:
        self._connected.clear()
        self._subscribed.clear()
        if self.on_connection is not None:
            self.on_connection(False)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        token = AckToken(self._generation, msg.mid, msg.qos)
        self.inbox.put(Inbound(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), token))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode,
                    props: Properties) -> None:
        sent_at = self._sent_at.pop(mid, None)
        if sent_at is not None and self.on_round_trip is not None:
            self.on_round_trip(time.perf_counter() - sent_at)
        self._confirmed.put(mid)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """True once the broker has granted every subscription of this connection (SUBACK)."""
        return self._subscribed.wait(timeout)

    # -- traffic ----------------------------------------------------------------------------

    def publish(self, message: Publish) -> int:
        assert self._client is not None
        info = self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)
        return info.mid

    def deliver(self, publishes: list[Publish], inbound: list[Inbound]) -> None:
        """Publish a batch's answers; its messages are acknowledged once the broker has them all.

        A crash before that means redelivery, so an answer is never lost behind a PUBACK.
        """
        record = _Pending(inbound, set())
        for message in publishes:
            sent_at = time.perf_counter()
            mid = self.publish(message)
            if message.qos > 0:
                if self.on_round_trip is not None:
                    self._sent_at.setdefault(mid, sent_at)
                record.waiting.add(mid)
                self._waiting_mids[mid] = record
        self._pending.append(record)
        self.settle()

    def settle(self) -> None:
        """Acknowledge, in arrival order, every batch whose answers the broker has confirmed."""
        if self._reconnected.is_set():
            # A new connection: messages of the old one are redelivered whatever we do, and paho
            # may not report its old publishes again, so stop waiting for them.
            self._reconnected.clear()
            for record in self._pending:
                record.waiting.clear()
            self._waiting_mids.clear()
            self._sent_at.clear()
        while True:
            try:
                mid = self._confirmed.get_nowait()
            except queue.Empty:
                break
            self._sent_at.pop(mid, None)  # its PUBACK beat deliver() to it: no sample
            if mid in self._waiting_mids:
                self._waiting_mids.pop(mid).waiting.discard(mid)
        while self._pending and not self._pending[0].waiting:
            for message in self._pending.popleft().inbound:
                self.ack(message)

    @property
    def unsettled(self) -> int:
        return len(self._pending)

    def ack(self, message: Inbound) -> None:
        """PUBACK a message; one received on an earlier connection is redelivered instead."""
        token = message.token
        if self._client is None or not isinstance(token, AckToken) or token.qos == 0:
            return
        if token.generation == self._generation:
            self._client.ack(token.mid, token.qos)

    def unsubscribe_all(self) -> None:
        if self._client is not None:
            for topic in self.topics:
                self._client.unsubscribe(self.subscription(topic))

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
