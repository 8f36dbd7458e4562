"""shadow-sync's door: each inbound message is decoded once and turned into one typed request.

Everything that can be judged from the message alone (encoding, size, clientToken, the shape
of the state, version and seq, tags, selectors) is judged here, before anything is read from
or written to Redis; the service only applies what is left. A request this door refuses
comes back as a `Refusal` with the error to answer and the `clientToken` when it could be read,
so every shadow and bulk request gets an answer however malformed it is (PROTOCOL §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemons.protocol.codec import CodecError, Encoding, decode, detect, salvage_token
from daemons.protocol.errors import Rejected
from daemons.protocol.messages import Inbound, Reply, client_token_of
from daemons.protocol.selector import Selector, parse_selector
from daemons.registry import parse_tags
from shadowsync import document as doc
from shadowsync.topics import Route, route

MAX_PAYLOAD = 64 * 1024  # shadow, bulk and tags requests
MAX_PRESENCE_PAYLOAD = 16 * 1024  # status and heartbeat (only hw / fw are read from them)


@dataclass(frozen=True, slots=True)
class Update:
    """`S/update`: `state` None is the null state (clears the document)."""

    route: Route
    reply: Reply
    state: dict[str, Any] | None
    version: int | None
    seq: int | None
    redelivered: bool = False  # DUP set: the broker may have delivered it (to us) before

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
class Refusal:
    """A request the door refuses: `reply` None where no answer topic exists (presence, tags)."""

    route: Route
    reply: Reply | None
    error: Rejected


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message on a topic that is not ours or with a bad device id."""

    route: Route


Request = Update | Read | Presence | Tags | Bulk | Refusal | Dropped


def _int_field(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise doc.ShadowError(400, f"{name} must be a non-negative integer")
    return value


def _tags(body: dict[str, Any] | None) -> dict[str, str]:
    try:
        return parse_tags(body or {})  # the registry's rule, shared with the operator API
    except ValueError as exc:
        raise doc.ShadowError(400, str(exc)) from None


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
    payload = message.payload
    presence = r.kind in ("status", "heartbeat", "tags")
    # Answers go in the request's encoding (§0); the bulk topic is an operator's: JSON.
    encoding: Encoding = "json" if r.kind == "bulk" else detect(payload) or "json"
    topic = f"{ops}/shadow/bulk" if r.kind == "bulk" else f"{r.base(prefix)}/{r.operation}"

    def reply(token: str | None) -> Reply | None:
        return None if presence else Reply(topic, token, r.operation, None, encoding)

    limit = MAX_PRESENCE_PAYLOAD if r.kind in ("status", "heartbeat") else MAX_PAYLOAD
    if len(payload) > limit:
        return Refusal(r, reply(salvage_token(payload)), Rejected(413, f"payload larger than {limit} bytes"))
    if not payload and presence:
        return Tags(r) if r.kind == "tags" else Presence(r, None)
    try:
        # Devices judge their own numbers field by field (§2); requests must be stored exactly.
        body, encoding = decode(payload, empty_as={} if r.kind in ("get", "delete") else None,
                                exact_numbers=r.kind not in ("status", "heartbeat"))
    except CodecError as exc:
        return Refusal(r, reply(exc.token), exc)
    if r.kind in ("status", "heartbeat"):
        return Presence(r, body, encoding)
    token = client_token_of(body)
    answer = reply(token)
    try:
        if "clientToken" in body and token is None:
            raise doc.ShadowError(400, "clientToken must be a string of at most 64 characters")
        if r.kind == "tags":
            return Tags(r, _tags(body))
        assert answer is not None
        if r.kind == "bulk":
            return Bulk(r, answer, parse_selector(body.get("selector")), _bulk_state(body))
        if r.kind == "bad_name":
            raise doc.ShadowError(400, "shadow name must match ^[A-Za-z0-9_-]{1,64}$")
        if r.kind == "update":
            state = doc.validate_state(body.get("state", doc.MISSING))
            return Update(r, answer, state, _int_field(body, "version"), _int_field(body, "seq"), message.dup)
        return Read(r, answer)
    except Rejected as exc:
        return Refusal(r, answer, exc)
