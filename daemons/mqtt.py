"""The daemons' MQTT session on paho-mqtt 2.x.

- MQTT 5 when the broker speaks it, 3.1.1 otherwise (amqtt 0.12 is 3.1.1 only).
- Persistent session (clean_start false, session expiry) and manual acknowledgement: a QoS 1
  message is PUBACKed only when the run loop says its effect is durable, so a crash means
  redelivery, never loss.
- `$share/<daemon>/` subscriptions when the broker offers them, so replicas split the load.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from daemons.config import Settings
from daemons.errors import FleetError
from daemons.messages import Inbound, Publish


@dataclass(frozen=True, slots=True)
class AckToken:
    generation: int
    mid: int
    qos: int


class MqttSession:
    """One broker connection feeding a queue of `Inbound` messages."""

    def __init__(self, settings: Settings, daemon: str, topics: list[str], client_id: str | None = None):
        self.settings = settings
        self.daemon = daemon
        self.topics = topics
        self.client_id = client_id or settings.mqtt_client_id or f"{daemon}-{socket.gethostname()}"
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

    def _try_connect(self, protocol: paho.MQTTProtocolVersion, timeout: float) -> tuple[bool, str]:
        url = urlparse(self.settings.mqtt_url)
        v5 = protocol == paho.MQTTv5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if self.settings.mqtt_username:
            client.username_pw_set(self.settings.mqtt_username, self.settings.mqtt_password)
        if url.scheme == "mqtts":
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(1, 30)
        # paho scans the whole in-flight window on every PUBACK: a modest window is faster.
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._connack = None
        self._connack_event.clear()
        self._attempt_v5 = v5
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.settings.session_expiry_s
            props.ReceiveMaximum = min(65535, max(100, 2 * self.settings.batch_max))
        port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        try:
            client.connect(url.hostname or "127.0.0.1", port, keepalive=30,
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

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        ok = not reason.is_failure
        self._connack = (ok, int(reason.value))
        if ok:
            with self._lock:
                self._generation += 1
            self.shared = self._shared_allowed(props)
            for topic in self.topics:
                client.subscribe(self.subscription(topic), qos=1)
            self._connected.set()
        self._connack_event.set()

    def _shared_allowed(self, props: Any) -> bool:
        mode = self.settings.shared_subscriptions
        if mode != "auto":
            return mode == "on"
        if self._attempt_v5:
            # MQTT 5: the property is absent when the broker offers shared subscriptions.
            return bool(getattr(props, "SharedSubscriptionAvailable", 1))
        return False  # MQTT 3.1.1 cannot tell; amqtt, for one, has none.

    def subscription(self, topic: str) -> str:
        return f"$share/{self.daemon}/{topic}" if self.shared else topic

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected.clear()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        token = AckToken(self._generation, msg.mid, msg.qos)
        self.inbox.put(Inbound(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), token))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected.wait(timeout)

    # -- traffic ----------------------------------------------------------------------------

    def publish(self, message: Publish) -> None:
        assert self._client is not None
        self._client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain)

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
