"""Which shadow-sync topic a message arrived on (PROTOCOL §1, §4, §5)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from daemons.protocol.messages import device_topic, valid_device_id

SHADOW_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
OPERATIONS = ("update", "get", "delete")


@dataclass(frozen=True, slots=True)
class Route:
    kind: str  # update | get | delete | status | heartbeat | bulk | tags | bad_id | bad_name | unknown
    device_id: str = ""
    shadow: str = ""  # "" is the classic shadow
    op: str = ""  # the operation a bad_name message asked for

    @property
    def operation(self) -> str:
        return self.op or self.kind

    def base(self, prefix: str) -> str:
        if self.shadow:
            return f"{prefix}/{self.device_id}/shadow/name/{self.shadow}"
        return f"{prefix}/{self.device_id}/shadow"


def subscriptions(prefix: str, ops_prefix: str) -> list[str]:
    topics = [f"{prefix}/+/shadow/{op}" for op in OPERATIONS]
    topics += [f"{prefix}/+/shadow/name/+/{op}" for op in OPERATIONS]
    topics += [f"{prefix}/+/status", f"{prefix}/+/heartbeat",
               f"{ops_prefix}/shadow/bulk", f"{ops_prefix}/devices/+/tags"]
    return topics


def route(topic: str, prefix: str, ops_prefix: str) -> Route:
    if topic == f"{ops_prefix}/shadow/bulk":
        return Route("bulk")
    if topic.startswith(ops_prefix + "/devices/"):
        parts = topic[len(ops_prefix) + 9:].split("/")
        if len(parts) == 2 and parts[1] == "tags":
            return Route("tags", parts[0]) if valid_device_id(parts[0]) else Route("bad_id")
        return Route("unknown")
    split = device_topic(topic, prefix)
    if split is None:
        return Route("unknown")
    device_id, rest = split[0], split[1].split("/")
    if not valid_device_id(device_id):
        return Route("bad_id")
    if rest in (["status"], ["heartbeat"]):
        return Route(rest[0], device_id)
    if len(rest) == 2 and rest[0] == "shadow" and rest[1] in OPERATIONS:
        return Route(rest[1], device_id)
    if len(rest) == 4 and rest[:2] == ["shadow", "name"] and rest[3] in OPERATIONS:
        if not SHADOW_NAME_RE.fullmatch(rest[2]):
            return Route("bad_name", device_id, rest[2], rest[3])
        return Route(rest[3], device_id, rest[2])
    return Route("unknown")
