"""Topic prefixes that begin with `$` (e.g. AWS IoT's `$aws/things`): what brokers do with them.

Measured with real brokers (tests/daemons/runtime/test_dollar_prefix.py keeps it true):

- mosquitto 2.0.11 carries `$` topics to plain subscriptions (`$aws/things/+/shadow/update`,
  MQTT 5 and 3.1.1), but never delivers them through a shared subscription
  (`$share/g/$aws/things/+/shadow/update` is granted, and silent), though MQTT 5 §4.8.2 allows it.
- amqtt 0.12 acknowledges a publish on a `$` topic and drops it (its reading of MQTT-4.7.2-1), and
  from then on delivers nothing that client publishes: its message loop for the client ends while
  the connection stays open. No device and no daemon can use such a prefix there.

Hence one rule for subscriptions (`mqtt.subscription_filter`: never `$share/` in front of a `$`
filter) and one check at start (`check_prefixes`, run by `app.open_session` and the simulator: a
short probe that publishes on each `$` prefix and expects its own message back, else a ConfigError
naming the variable).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as paho

from daemons.protocol.errors import ConfigError
from daemons.runtime.mqtt import make_client


def dollar_prefixes(topic_prefix: str, ops_prefix: str) -> list[tuple[str, str]]:
    """The (variable, prefix) pairs that begin with `$`, in the order checked."""
    pairs = [("FLEET_TOPIC_PREFIX", topic_prefix), ("FLEET_OPS_PREFIX", ops_prefix)]
    return [(name, value) for name, value in pairs if value.startswith("$")]


def probe_prefix(url: str, prefix: str, variable: str, username: str | None = None,
                 password: str | None = None, timeout: float = 5.0) -> None:
    """Publish one QoS 1 message on `<prefix>/fleet-probe-<uuid>` and wait for it on a plain subscription.

    The topic has a single level under the prefix, so no daemon filter (`<prefix>/+/...`) sees it.
    Raises ConfigError naming `variable` when the broker drops the message or the connection.
    Runs on its own short connection (clean session): on amqtt, the client that published is mute after.
    """
    topic = f"{prefix}/fleet-probe-{uuid.uuid4().hex[:12]}"
    got = threading.Event()
    lost = threading.Event()
    done = threading.Event()
    client, addr = make_client(url, f"fleet-probe-{uuid.uuid4().hex[:12]}", protocol=paho.MQTTv311,
                               username=username, password=password, clean_session=True)

    def on_connect(c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            lost.set()
            done.set()
        else:
            c.subscribe(topic, qos=1)

    def on_subscribe(c: paho.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if all(not code.is_failure for code in codes):
            c.publish(topic, b"probe", qos=1)
        else:
            lost.set()
            done.set()

    def on_message(_c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        if message.topic == topic:
            got.set()
            done.set()

    def on_disconnect(*_args: Any) -> None:
        lost.set()
        done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    try:
        client.connect(addr.host, addr.port, keepalive=10)
    except (OSError, ValueError):
        return  # unreachable: the session's own connect reports that
    client.loop_start()
    try:
        done.wait(timeout)
        why = "closed the connection" if lost.is_set() else f"did not deliver it within {timeout:g} s"
    finally:
        client.disconnect()
        client.loop_stop()
    if not got.is_set():
        raise ConfigError(
            f"{variable} ({prefix!r}): the broker at {url} does not carry topics that begin with '$' "
            f"(a test message on {topic!r}: the broker {why}; amqtt 0.12 drops them, MQTT-4.7.2-1); "
            f"use a prefix without '$' or a broker that carries them (mosquitto 2)")


def check_prefixes(url: str, topic_prefix: str, ops_prefix: str, username: str | None = None,
                   password: str | None = None) -> None:
    """Probe every `$` prefix (nothing to do for the others: every broker carries them)."""
    for variable, prefix in dollar_prefixes(topic_prefix, ops_prefix):
        probe_prefix(url, prefix, variable, username, password)
