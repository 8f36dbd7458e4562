"""shadow-sync's door: each inbound message is decoded once and turned into one typed request.

Everything that can be judged from the message alone (encoding, size, clientToken, the shape
of the state, version and seq, tags, selectors) is judged here, before anything is read from
or written to Redis; the service only applies what is left. A request this door refuses
comes back as `Refused` with the code to answer and the `clientToken` when it could be read,
so every shadow and bulk request gets an answer however malformed it is (PROTOCOL §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemons.protocol.codec import CodecError, Encoding, decode, detect, salvage_token
from daemons.protocol.messages import Inbound, Outcome, client_token_of, error_body
from daemons.protocol.selector import Selector, parse_selector, tag_value
from shadowsync import document as doc
from shadowsync.topics import Route, route

MAX_PAYLOAD = 64 * 1024  # shadow, bulk and tags requests
MAX_PRESENCE_PAYLOAD = 16 * 1024  # status and heartbeat (only hw / fw are read from them)
TAG_KEY_MAX, TAG_VALUE_MAX = 64, 256


@dataclass(frozen=True, slots=True)
class Reply:
    """How a request is answered: `{topic}/accepted` or `{topic}/rejected`, in its encoding."""

    topic: str
    encoding: Encoding = "json"
    token: str | None = None

    def accept(self, out: Outcome, body: dict[str, Any], suffix: str = "accepted") -> None:
        if self.token is not None:
            body = {**body, "clientToken": self.token}
        out.publish(f"{self.topic}/{suffix}", body, self.encoding)

    def reject(self, out: Outcome, code: int, message: str, now: int) -> None:
        out.publish(f"{self.topic}/rejected", error_body(code, message, self.token, now), self.encoding)


@dataclass(frozen=True, slots=True)
class Update:
    """`S/update`: `state` None is the null state (clears the document)."""

    route: Route
    reply: Reply
    state: dict[str, Any] | None
    version: int | None
    seq: int | None

    @property
    def reports(self) -> bool:
        """A device's report: only this (with status and heartbeats) says the device was there."""
        return self.state is not None and isinstance(self.state.get("reported"), dict)


@dataclass(frozen=True, slots=True)
class Read:
    """`S/get` or `S/delete` (route.kind says which)."""

    route: Route
    reply: Reply


@dataclass(frozen=True, slots=True)
class Presence:
    """The device's own status or heartbeat; `body` None for an empty (cleared retained) payload."""

    route: Route
    body: dict[str, Any] | None
    encoding: Encoding = "json"


@dataclass(frozen=True, slots=True)
class Tags:
    route: Route
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Bulk:
    route: Route
    reply: Reply
    selector: Selector
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the door refuses: `reply` None where no answer topic exists (presence, tags)."""

    route: Route
    reply: Reply | None
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message on a topic that is not ours or with a bad device id."""

    route: Route


Request = Update | Read | Presence | Tags | Bulk | Refused | Dropped


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise doc.ShadowError(400, f"{name} must be a non-negative integer")
    return value


def _tags(body: dict[str, Any] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for key, value in (body or {}).items():
        text = tag_value(value)
        if text is None or not key or len(key) > TAG_KEY_MAX or len(text) > TAG_VALUE_MAX:
            raise doc.ShadowError(400, f"tag {key[:TAG_KEY_MAX]!r} must be a short string")
        tags[key] = text
    return tags


def _bulk_state(body: dict[str, Any]) -> dict[str, Any]:
    state = body.get("state")
    if not isinstance(state, dict) or set(state) != {"desired"} or not isinstance(state["desired"], dict):
        raise doc.ShadowError(400, 'state must be {"desired": {...}}')
    doc.validate_state(state)
    return state


def parse(message: Inbound, prefix: str, ops: str) -> Request:
    """The one decode of a message, and the request it makes."""
    r = route(message.topic, prefix, ops)
    if r.kind in ("bad_id", "unknown"):
        return Dropped(r)
    presence = r.kind in ("status", "heartbeat", "tags")
    if r.kind == "bulk":
        reply: Reply | None = Reply(f"{ops}/shadow/bulk")
    elif presence:
        reply = None
    else:
        reply = Reply(f"{r.base(prefix)}/{r.operation}")
    payload = message.payload
    limit = MAX_PRESENCE_PAYLOAD if r.kind in ("status", "heartbeat") else MAX_PAYLOAD
    if len(payload) > limit:
        if reply is not None:
            encoding = "json" if r.kind == "bulk" else detect(payload) or "json"
            reply = Reply(reply.topic, encoding, salvage_token(payload))
        return Refused(r, reply, 413, f"payload larger than {limit} bytes")
    if not payload and presence:
        return Tags(r) if r.kind == "tags" else Presence(r, None)
    try:
        # Devices judge their own numbers field by field (§2); requests must be stored exactly.
        body, encoding = decode(payload, empty_as={} if r.kind in ("get", "delete") else None,
                                exact_numbers=r.kind not in ("status", "heartbeat"))
    except CodecError as exc:
        if reply is not None:
            encoding = "json" if r.kind == "bulk" else detect(payload) or "json"
            reply = Reply(reply.topic, encoding, exc.token)
        return Refused(r, reply, exc.code, exc.message)
    if r.kind in ("status", "heartbeat"):
        return Presence(r, body, encoding)
    token = client_token_of(body)
    if reply is not None:
        reply = Reply(reply.topic, "json" if r.kind == "bulk" else encoding, token)
    try:
        if "clientToken" in body and token is None:
            raise doc.ShadowError(400, "clientToken must be a string of at most 64 characters")
        if r.kind == "tags":
            return Tags(r, _tags(body))
        if r.kind == "bulk":
            assert reply is not None
            try:
                selector = parse_selector(body.get("selector"))
            except ValueError as exc:
                raise doc.ShadowError(400, str(exc)) from None
            return Bulk(r, reply, selector, _bulk_state(body))
        assert reply is not None
        if r.kind == "bad_name":
            raise doc.ShadowError(400, "shadow name must match ^[A-Za-z0-9_-]{1,64}$")
        if r.kind == "update":
            state = doc.validate_state(body.get("state", doc.MISSING))
            return Update(r, reply, state, _int_field(body, "version"), _int_field(body, "seq"))
        return Read(r, reply)
    except doc.ShadowError as exc:
        return Refused(r, reply, exc.code, exc.message)
