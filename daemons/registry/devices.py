"""The fleet registry in Redis: which devices exist, their hw/fw/tags, and indexes for selectors.

Per-device fields live in the device hash `{ns}:dev:{<id>}` (hash-tagged by device, shared with
the shadow documents; the planner's `ota:cur:{<id>}` job slot shares its slot). Index sets share
the hash tag `{idx}` so SINTER/SUNION and the API's ZINTERSTORE pages work on Redis Cluster too.

Why one slot for the fleet-wide indexes: a selector or a filtered page combines several of them
in one command inside Redis; spread over slots, each query would fetch whole sets to Python
and merge them there. The price is that one master holds every index (one member per device
per index, small beside the device hashes, which spread over all masters) and takes every index
write. A device's hash and the indexes are in different slots, so no script or MULTI spans both:
a device is written first (its own CAS script), its index entries right after in the same round
trip, so an index may hold a stale member for a moment; `select` re-checks candidates against the
device hash.

For the operator API's sorted, filtered pages (daemons.api.fleetindex), beside the sets:
`ids` (sorted set, every score 0: ids in byte order, for prefix search), `seen` (sorted set of
`last_seen_at`), `connected` (set of devices whose status says online) and `hwvals` (hw names).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from daemons.protocol.selector import Selector, tag_value

DEVICE_FIELDS = ("hw", "fw", "tags")


def device_key(namespace: str, device_id: str) -> str:
    return f"{namespace}:dev:{{{device_id}}}"


MAX_TAG_KEY, MAX_TAG_VALUE = 64, 256


def parse_tags(body: Any) -> dict[str, str]:
    """A device's tags as set on `{o}/devices/{id}/tags` (PROTOCOL §5): an object of short
    string (or number/boolean, kept as text) values. Raises ValueError naming the bad tag.

    Text that is not Unicode (a lone surrogate, which a JSON `\\ud800` escape makes) is refused
    here: shadow-sync's decoder refuses it too, and the tags topic has no answer, so fleet-api
    would otherwise wait for tags that never get stored and answer 503 (found by `make fuzz`).
    """
    if not isinstance(body, dict):
        raise ValueError("tags must be an object")
    tags: dict[str, str] = {}
    for k, v in body.items():
        text = tag_value(v)
        if (text is None or not isinstance(k, str) or not k or len(k) > MAX_TAG_KEY
                or len(text) > MAX_TAG_VALUE or not _unicode(k + text)):
            raise ValueError(f"tag {str(k)[:MAX_TAG_KEY]!r} must be a short string")
        tags[k] = text
    return tags


def _unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class DeviceInfo:
    device_id: str
    hw: str | None = None
    fw: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, device_id: str, hw: Any, fw: Any, tags: Any) -> DeviceInfo:
        parsed: dict[str, str] = {}
        if tags:
            try:
                value = json.loads(tags)
                if isinstance(value, dict):
                    parsed = {str(k): str(v) for k, v in value.items()}
            except ValueError:
                parsed = {}
        return cls(device_id, hw or None, fw or None, parsed)


class Registry:
    def __init__(self, redis: Any, namespace: str = "fleet") -> None:
        self.redis = redis
        self.ns = namespace

    def _idx(self, name: str) -> str:
        return f"{self.ns}:{{idx}}:{name}"

    def key(self, device_id: str) -> str:
        return device_key(self.ns, device_id)

    # -- writes (queued on a pipeline the caller executes) ----------------------------------

    def observe(self, pipe: Any, old: DeviceInfo, hw: str | None, fw: str | None) -> None:
        """Record that a device exists and, when given, its current hardware and firmware."""
        device_id = old.device_id
        mapping: dict[str, str] = {}
        pipe.sadd(self._idx("all"), device_id)
        pipe.zadd(self._idx("ids"), {device_id: 0})
        if hw and hw != old.hw:
            mapping["hw"] = hw
            if old.hw:
                pipe.srem(self._idx(f"hw:{old.hw}"), device_id)
            pipe.sadd(self._idx(f"hw:{hw}"), device_id)
            pipe.sadd(self._idx("hwvals"), hw)
        if fw and fw != old.fw:
            mapping["fw"] = fw
            if old.fw:
                pipe.srem(self._idx(f"fw:{old.fw}"), device_id)
            pipe.sadd(self._idx(f"fw:{fw}"), device_id)
            pipe.sadd(self._idx("fwvals"), fw)
        if mapping:
            pipe.hset(self.key(device_id), mapping=mapping)

    def record(self, seen: Mapping[str, tuple[str | None, str | None, str]]) -> dict[str, DeviceInfo]:
        """Record devices seen, with (hw, fw, encoding): each exists, its hw/fw when given, and the
        payload encoding it last used (`enc`, which the planner answers in). One read, one write
        round trip; returns what the registry held before."""
        if not seen:
            return {}
        old = self.read_many(seen)
        pipe = self.redis.pipeline(transaction=False)
        for device_id, (hw, fw, encoding) in seen.items():
            self.observe(pipe, old[device_id], hw, fw)
            pipe.hset(self.key(device_id), "enc", encoding)
        pipe.execute()
        return old

    def set_tags(self, pipe: Any, old: DeviceInfo, tags: dict[str, str]) -> None:
        device_id = old.device_id
        for k, v in old.tags.items():
            if tags.get(k) != v:
                pipe.srem(self._idx(f"tag:{k}={v}"), device_id)
        for k, v in tags.items():
            pipe.sadd(self._idx(f"tag:{k}={v}"), device_id)
        pipe.sadd(self._idx("all"), device_id)
        pipe.zadd(self._idx("ids"), {device_id: 0})
        pipe.hset(self.key(device_id), "tags", json.dumps(tags, sort_keys=True))

    @property
    def online_index(self) -> str:
        """set: devices whose last status message said online (`connected` = "1" in the hash)."""
        return self._idx("connected")

    def set_connected(self, pipe: Any, device_id: str, connected: str) -> None:
        """Index the device hash's `connected` field ("1" or "0") as shadow-sync writes it."""
        (pipe.sadd if connected == "1" else pipe.srem)(self.online_index, device_id)

    def presence(self, pipe: Any, device_id: str, last_seen_at: str | None, connected: str | None) -> None:
        """Index what shadow-sync just wrote to the device hash: `last_seen_at` (epoch seconds as
        text) in `seen` and `connected` ("1" or "0"); None for a field the write did not touch."""
        if last_seen_at is not None:
            pipe.zadd(self._idx("seen"), {device_id: int(last_seen_at)})
        if connected is not None:
            self.set_connected(pipe, device_id, connected)

    # -- reads -------------------------------------------------------------------------------

    def counts(self) -> tuple[int, int]:
        """(devices known, devices whose last status said online)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.scard(self._idx("all"))
        pipe.scard(self.online_index)
        known, online = pipe.execute()
        return int(known), int(online)

    def read_many(self, device_ids: Iterable[str]) -> dict[str, DeviceInfo]:
        ids = list(dict.fromkeys(device_ids))
        pipe = self.redis.pipeline(transaction=False)
        for device_id in ids:
            pipe.hmget(self.key(device_id), *DEVICE_FIELDS)
        rows = pipe.execute() if ids else []
        return {i: DeviceInfo.from_fields(i, *row) for i, row in zip(ids, rows, strict=True)}

    def all_devices(self) -> set[str]:
        return set(self.redis.smembers(self._idx("all")))

    def select(self, selector: Selector) -> list[str]:
        """Device ids matching the selector, from the indexes, each confirmed on its hash."""
        sets: list[str] = []
        if selector.hw is not None:
            sets.append(self._idx(f"hw:{selector.hw}"))
        sets.extend(self._idx(f"tag:{k}={v}") for k, v in selector.tags.items())
        candidates: set[str] | None = set(self.redis.sinter(sets)) if sets else None
        if selector.fw is not None:
            values = [v for v in self.redis.smembers(self._idx("fwvals"))
                      if fnmatch.fnmatchcase(v, selector.fw)]
            by_fw = set(self.redis.sunion([self._idx(f"fw:{v}") for v in values])) if values else set()
            candidates = by_fw if candidates is None else candidates & by_fw
        if selector.ids is not None:
            if candidates is None:
                known = self._known(selector.ids)
                candidates = {i for i in selector.ids if i in known}
            else:
                candidates &= selector.ids
        if candidates is None:
            candidates = self.all_devices()
        if not selector.needs_device_fields:
            return sorted(candidates)
        infos = self.read_many(sorted(candidates))
        return [i for i, d in infos.items() if selector.matches(i, d.hw, d.fw, d.tags)]

    def _known(self, ids: Iterable[str]) -> set[str]:
        ordered = list(ids)
        flags = self.redis.smismember(self._idx("all"), ordered) if ordered else []
        return {i for i, known in zip(ordered, flags, strict=True) if known}
