"""Decode once at the door: every inbound message of the planner becomes one typed value.

`route` reads the topic and decodes the payload once; the handlers downstream get a typed request
(with the `Reply` that answers it) or a device message, never raw bytes. Topics (PROTOCOL §3):
`{ops}/ota/releases/register`, `{ops}/ota/rollouts/{id}/command`, and from devices
`{p}/{id}/heartbeat|status|ota/status|health`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from daemons.protocol.codec import CodecError, Encoding, decode, salvage_token
from daemons.protocol.errors import Rejected
from daemons.protocol.messages import Inbound, Refused, Reply, client_token_of, device_topic, valid_device_id

DEVICE_TOPICS = ("heartbeat", "status", "ota/status", "health")
MAX_PAYLOAD = 256 * 1024  # of an operator request


@dataclass(frozen=True)
class OperatorRequest:
    """A decoded release registration or rollout command (`rollout_id` set for a command), received
    at `now`; `reply` answers it (metric kind `release` or `command`)."""

    kind: Literal["register", "command"]
    rollout_id: str | None
    body: dict[str, Any]
    reply: Reply
    now: float


@dataclass(frozen=True)
class DeviceMessage:
    device_id: str
    kind: str  # one of DEVICE_TOPICS
    body: dict[str, Any]
    encoding: Encoding


@dataclass(frozen=True)
class Dropped:
    """Nothing to act on: counted as (kind, result); `topic` is logged (once) when it is not ours."""

    kind: str
    result: str
    topic: str | None = None


Routed = OperatorRequest | Refused | DeviceMessage | Dropped


class Door:
    def __init__(self, prefix: str, ops: str) -> None:
        self.prefix = prefix
        self.ops = ops
        self.register_topic = f"{ops}/ota/releases/register"
        self._rollouts = f"{ops}/ota/rollouts/"

    def topics(self) -> list[str]:
        return [self.register_topic, f"{self._rollouts}+/command",
                *(f"{self.prefix}/+/{t}" for t in DEVICE_TOPICS)]

    def route(self, message: Inbound, now: float) -> Routed:
        topic = message.topic
        if topic == self.register_topic:
            return self._operator("register", None, topic, message.payload, now, "release")
        rid = self._command_rollout(topic)
        if rid is not None:
            return self._operator("command", rid, topic, message.payload, now, "command")
        return self._device(message)

    @staticmethod
    def _operator(kind: Literal["register", "command"], rid: str | None, topic: str, payload: bytes,
                  now: float, counted_as: str) -> OperatorRequest | Refused:
        reply = Reply(topic, None, counted_as, int(now))
        try:
            if len(payload) > MAX_PAYLOAD:
                raise CodecError(413, f"payload larger than {MAX_PAYLOAD} bytes", salvage_token(payload))
            body, _ = decode(payload)
            token = client_token_of(body)
            if "clientToken" in body and token is None:
                raise Rejected(400, "clientToken must be a string of at most 64 characters")
        except CodecError as exc:  # answered with the token when the payload named one
            return Refused(Reply(topic, exc.token, counted_as, int(now)), exc)
        except Rejected as exc:
            return Refused(reply, exc)
        return OperatorRequest(kind, rid, body, Reply(topic, token, counted_as, int(now)), now)

    def _command_rollout(self, topic: str) -> str | None:
        if topic.startswith(self._rollouts) and topic.endswith("/command"):
            rid = topic[len(self._rollouts):-len("/command")]
            return rid if "/" not in rid else None
        return None

    def _device(self, message: Inbound) -> DeviceMessage | Dropped:
        split = device_topic(message.topic, self.prefix)
        if split is None or split[1] not in DEVICE_TOPICS:
            return Dropped("message", "unknown", message.topic)
        device_id, kind = split
        if not valid_device_id(device_id):
            return Dropped("message", "bad_id", message.topic)
        if not message.payload:
            return Dropped(kind, "empty")  # a retained message being cleared
        try:
            # Devices' numbers are judged field by field (§2); only hw, fw and the job are read here.
            body, encoding = decode(message.payload, exact_numbers=False)
        except CodecError:
            return Dropped(kind, "malformed")
        return DeviceMessage(device_id, kind, body, encoding)
