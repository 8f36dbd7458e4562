"""FleetBroker: amqtt 0.12's Broker with three holes closed, each found by tests/identity.

1. amqtt merges a CONNECT into the existing session of its client id (username, password, Will) or
   deletes that session (clean session) *before* authenticating, and a refused CONNECT leaves the session
   marked connected: anyone knowing a client id could wipe or wedge a device's session and its queued
   messages. Here the CONNECT is authenticated first; a refused one never touches a session.
2. On every CONNECT amqtt sends the retained messages matching every filter *any* client subscribed to,
   without asking the topic plugins: a device connecting while a daemon holds `fleet/+/ota/job` would
   get every device's job. Here only the session's own filters, and only what the plugins let it read.
3. (In the plugin, daemons.broker.plugin) the Will topic is checked against the ACL at CONNECT, since
   amqtt publishes a Will without the PUBLISH check.

The overridden methods keep amqtt 0.12's signatures (pyproject pins amqtt==0.12.*); the code they
replace is amqtt's own, with the changes above.
"""

from __future__ import annotations

import asyncio

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

# Fields of a CONNECT that amqtt copies into an existing session it resumes.
_RESUMED = ("will_flag", "will_retain", "will_message", "will_topic", "will_qos", "keep_alive",
            "username", "password")


class FleetBroker(Broker):  # type: ignore[misc]  # amqtt is untyped
    """amqtt's Broker: authenticate before any session is touched; retained messages by the ACL."""

    async def _initialize_client_session(self, reader: ReaderAdapter, writer: WriterAdapter,
                                         remote_address: str, remote_port: int,
                                         ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager)
        except (AMQTTError, MQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc  # amqtt's _client_connected logs it and frees the slot
        if not await self._authenticate(incoming, None):
            incoming.parent = 0
            handler.attach(incoming, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise AMQTTError(f"CONNECT of {incoming.username!r} refused")
        session = incoming
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif incoming.client_id in self._sessions:
            session = self._sessions[incoming.client_id][0]
            for name in _RESUMED:
                setattr(session, name, getattr(incoming, name))
            session.parent = 1
        else:
            incoming.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        topic_filter, qos = subscription
        if not any(s.client_id == session.client_id for s, _ in self._subscriptions.get(topic_filter, [])):
            return
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter) and await self._topic_filtering(
                    session, topic, Action.RECEIVE):
                tasks.append(asyncio.ensure_future(handler.mqtt_publish(
                    retained.topic, retained.data, min(qos, retained.qos or qos), retain=True)))
        if tasks:
            await asyncio.wait(tasks)
