"""The fleet plugin for amqtt 0.12: who may connect, what each may publish and read, and presence.

- Authentication: an account of the password file (daemons and operators; mosquitto's `$7$` format,
  daemons.protocol.passwd) by its hash; any other valid device id by its password derived from the
  fleet secret (daemons.protocol.keys.device_password), so no file lists the devices. A name with a
  `user` block in the ACL is an account and never logs in as a device, whatever its password.
- ACL: the mosquitto acl_file the production broker uses (daemons.protocol.acl), its `fleet`/`fleetops`
  first levels renamed to FLEET_TOPIC_PREFIX/FLEET_OPS_PREFIX. PUBLISH needs a write rule; SUBSCRIBE is
  refused (SUBACK 0x80) unless every topic the filter can match is readable (amqtt sends retained
  messages on SUBSCRIBE without another check); each delivery is checked again (RECEIVE).
- Sessions: a client id stays with the identity that first used it (amqtt would otherwise hand its
  queued messages to whoever logs in with it). A Last Will must be on a topic the client may write.
  daemons.broker.core.FleetBroker closes the holes of amqtt itself (session handling before
  authentication, retained messages on CONNECT).
- Presence: when a device's connection opens the broker publishes `{p}/{id}/status` `{"online": true,
  "ts"}` (not retained: the device's own retained status, with its fw, stays); when its last connection
  closes, for whatever reason and with or without a Last Will, the retained `{"online": false, "ts"}`,
  so shadow-sync sees it offline (PROTOCOL §4).

amqtt API used (amqtt/plugins/base.py, amqtt/broker.py of 0.12): BaseAuthPlugin.authenticate,
BaseTopicPlugin.topic_filtering with Action.PUBLISH/SUBSCRIBE/RECEIVE, `on_broker_client_connected` and
`on_broker_client_disconnected` event methods, BrokerContext.broadcast_message/retain_message.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from daemons.protocol.acl import load_acl
from daemons.protocol.codec import encode
from daemons.protocol.keys import device_password, parse_hex_key
from daemons.protocol.messages import valid_device_id
from daemons.protocol.passwd import read_passwd, verify_password

log = logging.getLogger("daemons.broker")


class FleetPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Authentication, topic ACL and presence for the embedded broker (see the module docstring)."""

    @dataclass
    class Config:
        secret: str | None = field(default=None, repr=False)  # hex fleet secret
        passwd_file: str | None = None
        acl_file: str | None = None  # None: the shipped mosquitto/acl.conf
        topic_prefix: str = "fleet"
        ops_prefix: str = "fleetops"

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        cfg: FleetPlugin.Config = self.context.config
        self._secret = parse_hex_key(cfg.secret) if cfg.secret else None
        self._accounts = read_passwd(cfg.passwd_file) if cfg.passwd_file else {}
        self._acl = load_acl(cfg.acl_file).with_prefixes(cfg.topic_prefix, cfg.ops_prefix)
        self._prefix = cfg.topic_prefix
        self._connections: Counter[str] = Counter()
        # client id -> the identity that opened its session: amqtt sends the messages queued in a
        # persistent session, without a RECEIVE check, to whoever resumes it.
        self._owners: dict[str, str] = {}

    # -- authentication -------------------------------------------------------------------------

    async def authenticate(self, *, session: Session) -> bool:
        ok = self.check_password(session.username, session.password)
        owner = self._owners.get(session.client_id or "")
        if ok and owner is not None and owner != session.username:
            log.info("refused %r: client id %r belongs to another identity", session.username,
                     session.client_id)
            ok = False
        if ok and session.will_flag and not self._acl.may_write(
                session.username or "", session.client_id or "", session.will_topic or ""):
            # amqtt publishes a Will without the PUBLISH check: a Will must be a topic the client may write.
            log.info("refused %r: Last Will on %r not allowed", session.username, session.will_topic)
            ok = False
        if not ok:
            # The username only: a password never reaches a log.
            log.info("refused %r from %s", session.username, session.remote_address)
        return ok

    def check_password(self, username: str | None, password: str | None) -> bool:
        if not username or password is None:
            return False
        stored = self._accounts.get(username)
        if stored is not None:
            return verify_password(password, stored)
        if self._acl.is_account(username) or not valid_device_id(username) or self._secret is None:
            return False
        return hmac.compare_digest(device_password(self._secret, username).encode(), password.encode())

    def is_device(self, session: Session | None) -> bool:
        username = session.username if session else None
        return bool(username) and not self._acl.is_account(str(username)) and username not in self._accounts

    # -- ACL ------------------------------------------------------------------------------------

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or not topic or not session.username:
            return False
        user, client_id = session.username, session.client_id or ""
        if action == Action.PUBLISH:
            return self._acl.may_write(user, client_id, topic)
        if action == Action.SUBSCRIBE:
            return self._acl.may_subscribe(user, client_id, topic)
        if action == Action.RECEIVE:
            return self._acl.may_read(user, client_id, topic)
        return False

    # -- presence -------------------------------------------------------------------------------

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        if client_session.username:
            self._owners[client_id] = client_session.username
        if not self.is_device(client_session):
            return
        device = client_session.username or ""
        self._connections[device] += 1
        await self.context.broadcast_message(
            f"{self._prefix}/{device}/status", encode({"online": True, "ts": int(time.time())}), 1)

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Session) -> None:
        if client_session.clean_session:
            self._owners.pop(client_id, None)  # a clean session ends with its connection
        if not self.is_device(client_session):
            return
        device = client_session.username or ""
        if self._connections[device] > 1:
            self._connections[device] -= 1
            return  # another connection of the device is still open (e.g. a take-over)
        self._connections.pop(device, None)
        topic, body = f"{self._prefix}/{device}/status", encode({"online": False, "ts": int(time.time())})
        await self.context.broadcast_message(topic, body, 1)
        await self.context.retain_message(topic, body, 1)
