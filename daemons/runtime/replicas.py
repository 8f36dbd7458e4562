"""Which messages one replica handles when the broker gives every replica every message.

Behind `$share` (MQTT 5, mosquitto) the broker deals each message to one replica of a group, and
nothing here applies. A 3.1.1 broker (amqtt 0.12) has no shared subscriptions, and `$` topics are
never shared (runtime.mqtt.dealt): each replica subscribes plainly and receives every such
message. Two rules then make each effect happen once:

- Operator commands (the daemon's `once` filters): the first replica to claim the message in
  Redis answers it (daemons.runtime.once.ClaimOnce), so any live replica serves a command.
- Device topics (`{prefix}/<id>/...` and `{ops}/devices/<id>/...`): a fixed partition. Replica
  `replica_index` of `replica_count` handles the devices with `crc32(id) mod replica_count ==
  replica_index` and acknowledges the others' messages without effect. Every device has exactly
  one owner, which also keeps each device's messages in order. A device's message is never
  dropped by every replica: its owner has its own persistent session, in which the broker keeps
  the message while that replica is down, until it is back (delayed, not lost). A claim would
  not do here: a device may send the same bytes twice on purpose (two identical updates are two
  versions), and a claim by content would swallow the second.

The partition needs every index 0..count-1 running with the same count: `ReplicaLease`
refuses to start a replica whose index another live replica holds or whose count differs.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from paho.mqtt.client import topic_matches_sub

from daemons.protocol.errors import ConfigError
from daemons.protocol.messages import Inbound, device_topic
from daemons.runtime.config import Settings
from daemons.runtime.mqtt import dealt
from daemons.runtime.once import ClaimOnce


def owner_of(device_id: str, count: int) -> int:
    """The replica index (0..count-1) that handles `device_id`: crc32 of its UTF-8 bytes mod count."""
    return zlib.crc32(device_id.encode()) % count


@dataclass(frozen=True, slots=True)
class Partition:
    """Replica `index` of `count`: owns the device topics of the devices `owner_of` gives it."""

    index: int
    count: int
    prefix: str
    ops_prefix: str

    def device_of(self, topic: str) -> str | None:
        """The device id a topic is about (`{prefix}/<id>/...`, `{ops}/devices/<id>/...`), else None."""
        split = device_topic(topic, self.prefix) or device_topic(topic, f"{self.ops_prefix}/devices")
        return split[0] if split else None

    def owns(self, topic: str) -> bool:
        """Whether this replica handles `topic`; a topic about no device is every replica's."""
        device_id = self.device_of(topic)
        return device_id is None or owner_of(device_id, self.count) == self.index


class Replicas:
    """`keep(batch)`: the messages of a batch this replica handles (the run loop acks the rest)."""

    def __init__(self, claim: ClaimOnce | None, partition: Partition | None, shared: bool = False) -> None:
        self.claim = claim
        self.partition = partition
        self.shared = shared  # the session's: messages the broker dealt are this replica's already

    @classmethod
    def for_broker(cls, settings: Settings, redis: Any, owner: str, once: list[str],
                   shared: bool) -> Replicas | None:
        """The rules for a session: claims for `once` filters and, when FLEET_REPLICA_COUNT > 1,
        the partition of device topics; None when the broker deals every topic of the daemon."""
        prefixes = (settings.topic_prefix, settings.ops_prefix)
        if all(dealt(prefix, shared) for prefix in prefixes):
            return None
        claim = ClaimOnce(redis, owner, once) if once else None
        partition = (Partition(settings.replica_index, settings.replica_count, *prefixes)
                     if settings.replica_count > 1 else None)
        return cls(claim, partition, shared) if claim or partition else None

    def keep(self, batch: list[Inbound]) -> list[Inbound]:
        """Raises what Redis raises (the run loop retries the batch: claims already made are kept)."""
        mine = batch
        if self.partition is not None:
            claimed = self.claim.filters if self.claim else []
            mine = [m for m in batch if dealt(m.topic, self.shared) or self.partition.owns(m.topic)
                    or any(topic_matches_sub(f, m.topic) for f in claimed)]
        if self.claim is not None and mine:
            plain = [m for m in mine if not dealt(m.topic, self.shared)]
            if plain:
                kept = {id(m) for m in self.claim.keep(plain)}
                mine = [m for m in mine if dealt(m.topic, self.shared) or id(m) in kept]
        return mine


# KEYS[1]: the daemon's lease hash (field: replica index, value: "owner|count|expires_ms").
# ARGV: index, owner, count, ttl_ms. Returns "" when taken, else why not. Redis's clock, one for all
# replicas (TIME before writes: Redis >= 5 replicates a script's effects, not the script).
LEASE_SCRIPT = """
local mine = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local owner, count, expires = string.match(all[i + 1], '^(.*)|(%d+)|(%d+)$')
  if expires and tonumber(expires) > now then
    if count ~= ARGV[3] then return 'replica ' .. all[i] .. ' (' .. owner .. ') runs with count ' .. count end
    if all[i] == mine and owner ~= ARGV[2] then return 'index ' .. mine .. ' is held by ' .. owner end
  elseif all[i] ~= mine then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
local expires = string.format('%d', now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], mine, ARGV[2] .. '|' .. ARGV[3] .. '|' .. expires)
return ''
"""

RELEASE_SCRIPT = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.sub(held, 1, #ARGV[2] + 1) == ARGV[2] .. '|' then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


class ReplicaLease:
    """A replica's hold on its index: `{ns}:replicas:{<daemon>}:<topic prefix>`, one field per index.

    `take()` (at start, then every `ttl_s / 3` s) raises ConfigError when another live replica
    holds the same index or runs with another count: either would leave devices to no replica or
    to two. A replica that stops lets its hold lapse after `ttl_s`; restarted with the same
    client id it takes its index back at once. The topic prefix scopes the lease: daemons serving
    another prefix serve other devices.
    """

    def __init__(self, redis: Any, daemon: str, owner: str, index: int, count: int, ttl_s: float = 30.0,
                 namespace: str = "fleet", scope: str = "fleet") -> None:
        self.key = f"{namespace}:replicas:{{{daemon}}}:{scope}"
        self.owner, self.index, self.count = owner, index, count
        self.ttl_s = ttl_s
        self._script = redis.register_script(LEASE_SCRIPT)
        self._release = redis.register_script(RELEASE_SCRIPT)

    def take(self) -> None:
        why = self._script(keys=[self.key], args=[str(self.index), self.owner, str(self.count),
                                                   int(self.ttl_s * 1000)])
        if why:
            hint = ("; another replica runs on plain subscriptions, where each would apply every "
                    "device message: number them (FLEET_REPLICA_COUNT, FLEET_REPLICA_INDEX) or put them "
                    "behind shared subscriptions (README, Running replicas)") if self.count == 1 else ""
            raise ConfigError(
                f"FLEET_REPLICA_INDEX={self.index}, FLEET_REPLICA_COUNT={self.count}: {why}{hint}")

    def release(self) -> None:
        """Give the index up (on a clean stop), if still ours, so a rescale need not wait `ttl_s`."""
        self._release(keys=[self.key], args=[str(self.index), self.owner])
