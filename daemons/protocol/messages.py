"""What flows between the I/O layer and the pure domain packages."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from daemons.protocol.codec import Encoding, encode
from daemons.protocol.errors import Rejected

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
CLIENT_TOKEN_MAX = 64


def valid_device_id(value: object) -> bool:
    return isinstance(value, str) and DEVICE_ID_RE.fullmatch(value) is not None


def device_topic(topic: str, prefix: str) -> tuple[str, str] | None:
    """Split `{prefix}/{device id}/{rest}` into (device id, rest); None for any other topic.

    The id comes back unchecked: callers test it with `valid_device_id`, since a bad id is
    counted and dropped (PROTOCOL §0) where an unrelated topic is simply not theirs.
    """
    if not topic.startswith(prefix + "/"):
        return None
    device_id, sep, rest = topic[len(prefix) + 1:].partition("/")
    return (device_id, rest) if sep else None


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received MQTT message. `token` lets the I/O layer acknowledge it later."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    token: Any = None
    dup: bool = False  # the broker's DUP flag: a redelivery of a message it may have sent before


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass
class Outcome:
    """What a domain handler did with a batch: messages to publish and events to count."""

    publishes: list[Publish] = field(default_factory=list)
    # (kind, result) pairs with bounded values, turned into metric increments by the daemon.
    counts: list[tuple[str, str]] = field(default_factory=list)

    def publish(self, topic: str, value: Any, encoding: Encoding = "json", retain: bool = False) -> None:
        self.publishes.append(Publish(topic, encode(value, encoding), 1, retain))

    def count(self, kind: str, result: str) -> None:
        self.counts.append((kind, result))

    def extend(self, other: Outcome) -> None:
        self.publishes.extend(other.publishes)
        self.counts.extend(other.counts)


def with_client_token(body: dict[str, Any], client_token: str | None) -> dict[str, Any]:
    """`body` (changed in place) with the request's clientToken, when it had a valid one: every answer
    to a request carries it back (PROTOCOL §0), accepted, rejected, documents and delta alike."""
    if isinstance(client_token, str):
        body["clientToken"] = client_token
    return body


def error_body(code: int, message: str, client_token: str | None = None,
               now: int | None = None) -> dict[str, Any]:
    """The §0 error payload."""
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "timestamp": int(time.time()) if now is None else now,
    }
    return with_client_token(body, client_token)


def client_token_of(request: dict[str, Any]) -> str | None:
    token = request.get("clientToken")
    if isinstance(token, str) and len(token) <= CLIENT_TOKEN_MAX:
        return token
    return None


@dataclass(frozen=True)
class Reply:
    """How one request is answered (PROTOCOL §0): on `{topic}/accepted` or `{topic}/rejected`, with the
    request's clientToken; each outcome counted under `counted_as` (`rejected_<code>` for refusals).

    `now`: the timestamp of a rejection (None: the clock at that moment).
    """

    topic: str
    token: str | None
    counted_as: str
    now: int | None = None
    encoding: Encoding = "json"  # the request's: device requests are answered in their encoding

    def accept(self, out: Outcome, body: dict[str, Any], result: str = "accepted") -> None:
        out.publish(f"{self.topic}/accepted", with_client_token(body, self.token), self.encoding)
        out.count(self.counted_as, result)

    def reject(self, out: Outcome, error: Rejected) -> None:
        out.publish(f"{self.topic}/rejected", error_body(error.code, error.message, self.token, self.now),
                    self.encoding)
        out.count(self.counted_as, f"rejected_{error.code}")


@dataclass(frozen=True)
class Refused:
    """A request refused at the door, before it could be read (too large, undecodable, bad clientToken)."""

    reply: Reply
    error: Rejected
