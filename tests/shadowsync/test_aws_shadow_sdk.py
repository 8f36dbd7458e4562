"""AWS IoT Device Shadow compatibility: the official SDK's IotShadowClient against shadow-sync.

FLEET_TOPIC_PREFIX=$aws/things and otherwise the default configuration (shared subscriptions
`auto`, MQTT 5 to mosquitto). The device is the SDK, unchanged, over a plain MQTT connection
(3.1.1 `mqtt.Connection` and MQTT 5 `mqtt5.Client`). amqtt 0.12 cannot serve `$aws/things`
(tests/daemons/runtime/test_dollar_prefix.py: shadow-sync refuses to start there).
"""

from __future__ import annotations

import datetime

import paho.mqtt.client as paho
import pytest
from awsiot import iotshadow as s

from daemons.protocol.keys import device_password, parse_hex_key
from tests.aws_sdk import CLIENT_KINDS, QOS1, Events, SdkConnection, subscribed
from tests.support import Probe, iter_unique, start_amqtt

_things = iter_unique("thing")


@pytest.fixture
def prefixes() -> tuple[str, str]:
    return "$aws/things", f"ops{next(_things)}"


@pytest.fixture(params=CLIENT_KINDS)
def sdk(request, broker, daemon):
    sync = daemon("shadowsync")
    started = sync.event("started")  # READY=1 may come before the log line is read
    assert started["protocol"] == 5 and started["shared"] is False, "the default configuration"
    thing = next(_things)
    conn = SdkConnection(broker.url, f"sdk-{thing}", request.param)
    yield s.IotShadowClient(conn.connection), thing
    conn.close()


def subscribe_classic(client: s.IotShadowClient, thing: str, ev: Events) -> None:
    q, t = QOS1, {"thing_name": thing}
    subscribed(client.subscribe_to_get_shadow_accepted(s.GetShadowSubscriptionRequest(**t), q, ev.on("get+")))
    subscribed(client.subscribe_to_get_shadow_rejected(s.GetShadowSubscriptionRequest(**t), q, ev.on("get-")))
    subscribed(client.subscribe_to_update_shadow_accepted(
        s.UpdateShadowSubscriptionRequest(**t), q, ev.on("update+")))
    subscribed(client.subscribe_to_update_shadow_rejected(
        s.UpdateShadowSubscriptionRequest(**t), q, ev.on("update-")))
    subscribed(client.subscribe_to_delete_shadow_accepted(
        s.DeleteShadowSubscriptionRequest(**t), q, ev.on("delete+")))
    subscribed(client.subscribe_to_delete_shadow_rejected(
        s.DeleteShadowSubscriptionRequest(**t), q, ev.on("delete-")))
    subscribed(client.subscribe_to_shadow_delta_updated_events(
        s.ShadowDeltaUpdatedSubscriptionRequest(**t), q, ev.on("delta")))
    subscribed(client.subscribe_to_shadow_updated_events(
        s.ShadowUpdatedSubscriptionRequest(**t), q, ev.on("documents")))


def test_classic_shadow_with_the_sdk(sdk):
    client, thing = sdk
    t = {"thing_name": thing}
    ev = Events()
    subscribe_classic(client, thing, ev)

    # get of a missing shadow: 404, parsed as ErrorResponse, clientToken echoed
    client.publish_get_shadow(s.GetShadowRequest(**t, client_token="g0"), QOS1).result(10)
    err = ev.next("get-")
    assert isinstance(err, s.ErrorResponse) and err.code == 404 and err.client_token == "g0"

    # desired from the "cloud" side: accepted with metadata, a delta event, a documents event
    client.publish_update_shadow(s.UpdateShadowRequest(
        **t, state=s.ShadowState(desired={"color": "red", "power": {"on": True}}), client_token="u1"), QOS1
    ).result(10)
    ok = ev.next("update+")
    assert isinstance(ok, s.UpdateShadowResponse)
    assert ok.version == 1 and ok.client_token == "u1" and ok.state.desired == {"color": "red",
                                                                               "power": {"on": True}}
    assert isinstance(ok.timestamp, datetime.datetime)
    assert ok.metadata.desired["color"]["timestamp"] > 0
    delta = ev.next("delta")
    assert isinstance(delta, s.ShadowDeltaUpdatedEvent)
    assert delta.state == {"color": "red", "power": {"on": True}} and delta.version == 1
    docs = ev.next("documents")
    assert isinstance(docs, s.ShadowUpdatedEvent) and docs.current.version == 1
    assert docs.current.state.desired == {"color": "red", "power": {"on": True}}

    # the device reports part of it: the delta keeps what still differs
    client.publish_update_shadow(s.UpdateShadowRequest(
        **t, state=s.ShadowState(reported={"color": "red"}), client_token="u2"), QOS1).result(10)
    assert ev.next("update+").version == 2
    docs = ev.next("documents")
    assert docs.previous.version == 1 and docs.current.version == 2
    assert docs.current.state.reported == {"color": "red"}

    # get/accepted with state.delta
    client.publish_get_shadow(s.GetShadowRequest(**t, client_token="g1"), QOS1).result(10)
    got = ev.next("get+")
    assert isinstance(got, s.GetShadowResponse) and got.version == 2 and got.client_token == "g1"
    assert got.state.delta == {"power": {"on": True}} and got.state.reported == {"color": "red"}
    assert got.metadata.reported["color"]["timestamp"] > 0

    # a version conflict: 409 parsed, clientToken echoed, nothing stored
    client.publish_update_shadow(s.UpdateShadowRequest(
        **t, state=s.ShadowState(reported={"color": "blue"}), version=1, client_token="u3"), QOS1).result(10)
    err = ev.next("update-")
    assert isinstance(err, s.ErrorResponse) and err.code == 409 and err.client_token == "u3"
    # the matching version is accepted
    client.publish_update_shadow(s.UpdateShadowRequest(
        **t, state=s.ShadowState(reported={"power": {"on": True}}), version=2), QOS1).result(10)
    assert ev.next("update+").version == 3
    ev.next("documents")

    # desired: null (the SDK's desired_is_nullable) with reported, in one update
    client.publish_update_shadow(s.UpdateShadowRequest(
        **t, state=s.ShadowState(desired=None, desired_is_nullable=True, reported={"color": "green"}),
        client_token="u4"), QOS1).result(10)
    ok = ev.next("update+")
    assert ok.version == 4 and ok.client_token == "u4" and ok.state.reported == {"color": "green"}
    assert ok.state.desired is None and ok.state.desired_is_nullable
    client.publish_get_shadow(s.GetShadowRequest(**t), QOS1).result(10)
    got = ev.next("get+")
    # AWS omits the cleared section; shadow-sync answers `"desired": {}`: both parse to "no desired"
    assert not got.state.desired and got.state.delta is None
    assert got.state.reported == {"color": "green", "power": {"on": True}}

    # a malformed update: 400 on update/rejected, parsed
    client.publish_update_shadow(s.UpdateShadowRequest(
        **t, state=s.ShadowState(reported={"x" * 65: 1}), client_token="u5"), QOS1).result(10)
    err = ev.next("update-")
    assert err.code == 400 and err.client_token == "u5" and err.message

    # delete, then get is 404 again
    client.publish_delete_shadow(s.DeleteShadowRequest(**t, client_token="d1"), QOS1).result(10)
    gone = ev.next("delete+")
    assert isinstance(gone, s.DeleteShadowResponse) and gone.version == 4 and gone.client_token == "d1"
    client.publish_get_shadow(s.GetShadowRequest(**t), QOS1).result(10)
    assert ev.next("get-").code == 404
    # delete of a missing shadow: 404 on delete/rejected
    client.publish_delete_shadow(s.DeleteShadowRequest(**t, client_token="d2"), QOS1).result(10)
    err = ev.next("delete-")
    assert err.code == 404 and err.client_token == "d2"


def test_named_shadow_with_the_sdk(sdk):
    client, thing = sdk
    t = {"thing_name": thing}
    n = {**t, "shadow_name": "config"}
    ev = Events()
    q = QOS1
    subscribed(client.subscribe_to_get_named_shadow_accepted(
        s.GetNamedShadowSubscriptionRequest(**n), q, ev.on("get+")))
    subscribed(client.subscribe_to_get_named_shadow_rejected(
        s.GetNamedShadowSubscriptionRequest(**n), q, ev.on("get-")))
    subscribed(client.subscribe_to_update_named_shadow_accepted(
        s.UpdateNamedShadowSubscriptionRequest(**n), q, ev.on("update+")))
    subscribed(client.subscribe_to_update_named_shadow_rejected(
        s.UpdateNamedShadowSubscriptionRequest(**n), q, ev.on("update-")))
    subscribed(client.subscribe_to_delete_named_shadow_accepted(
        s.DeleteNamedShadowSubscriptionRequest(**n), q, ev.on("delete+")))
    subscribed(client.subscribe_to_named_shadow_delta_updated_events(
        s.NamedShadowDeltaUpdatedSubscriptionRequest(**n), q, ev.on("delta")))
    subscribed(client.subscribe_to_named_shadow_updated_events(
        s.NamedShadowUpdatedSubscriptionRequest(**n), q, ev.on("documents")))
    # the classic shadow's delta must not see the named shadow's traffic
    subscribed(client.subscribe_to_shadow_delta_updated_events(
        s.ShadowDeltaUpdatedSubscriptionRequest(**t), q, ev.on("classic-delta")))

    client.publish_get_named_shadow(s.GetNamedShadowRequest(**n, client_token="g0"), q).result(10)
    assert ev.next("get-").code == 404

    client.publish_update_named_shadow(s.UpdateNamedShadowRequest(
        **n, state=s.ShadowState(desired={"rate_s": 30}), client_token="n1"), q).result(10)
    ok = ev.next("update+")
    assert ok.version == 1 and ok.client_token == "n1" and ok.state.desired == {"rate_s": 30}
    delta = ev.next("delta")
    assert delta.state == {"rate_s": 30} and delta.version == 1
    assert ev.next("documents").current.state.desired == {"rate_s": 30}

    client.publish_update_named_shadow(s.UpdateNamedShadowRequest(
        **n, state=s.ShadowState(reported={"rate_s": 30}), version=7, client_token="n2"), q
    ).result(10)
    err = ev.next("update-")
    assert err.code == 409 and err.client_token == "n2"

    client.publish_update_named_shadow(s.UpdateNamedShadowRequest(
        **n, state=s.ShadowState(reported={"rate_s": 30}), version=1), q).result(10)
    assert ev.next("update+").version == 2
    client.publish_get_named_shadow(s.GetNamedShadowRequest(**n, client_token="g1"), q).result(10)
    got = ev.next("get+")
    assert got.version == 2 and got.state.delta is None and got.state.reported == {"rate_s": 30}

    client.publish_delete_named_shadow(s.DeleteNamedShadowRequest(**n, client_token="d1"),
                                       q).result(10)
    assert ev.next("delete+").client_token == "d1"
    client.publish_get_named_shadow(s.GetNamedShadowRequest(**n), q).result(10)
    assert ev.next("get-").code == 404
    assert ev.empty("classic-delta")


def test_amqtt_drops_what_the_sdk_publishes_on_aws_topics(tmp_path):
    """Why there is no amqtt variant: amqtt 0.12 (MQTT 3.1.1 only, so only the SDK's 3.1.1 client
    connects) drops a publish on a `$` topic, though the embedded broker's ACL allows it here, and
    shadow-sync refuses to start there with `$aws/things` (tests/daemons/runtime/test_dollar_prefix.py)."""
    amqtt = start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": "$aws/things",
                                                 "FLEET_OPS_PREFIX": "opsaws"})
    operator = ("operator", amqtt.accounts["operator"])
    watch = Probe(amqtt.url, protocol=paho.MQTTv311, auth=operator).connect()
    watch.subscribe("$aws/things/t1/shadow/get", "opsaws/marker")
    marker = Probe(amqtt.url, protocol=paho.MQTTv311, auth=operator).connect()
    # The device's own account; the SDK's metrics would otherwise change its username.
    device = ("t1", device_password(parse_hex_key(amqtt.secret), "t1"))
    conn = SdkConnection(amqtt.url, "t1", "mqtt311", auth=device)
    try:
        client = s.IotShadowClient(conn.connection)
        client.publish_get_shadow(s.GetShadowRequest(thing_name="t1"), QOS1).result(10)  # PUBACKed
        marker.publish("opsaws/marker", {"after": True})
        assert watch.wait("opsaws/marker").body == {"after": True}
        assert [m.topic for m in watch.drain(0.3)] == [], "amqtt delivered a $aws topic"
    finally:
        conn.close()
        watch.close()
        marker.close()
        amqtt.stop()
