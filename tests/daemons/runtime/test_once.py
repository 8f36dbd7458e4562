"""ClaimOnce: without shared subscriptions, one replica handles each operator request."""

from __future__ import annotations

from daemons.protocol.messages import Inbound
from daemons.runtime.once import ClaimOnce

FILTERS = ["ops/ota/rollouts/+/command", "ops/ota/releases/register"]


def msg(topic: str, payload: bytes = b"{}") -> Inbound:
    return Inbound(topic, payload, 1, False, None)


def test_first_claimer_handles_others_let_go(redis):
    a, b = ClaimOnce(redis, "a", FILTERS), ClaimOnce(redis, "b", FILTERS)
    command, device = msg("ops/ota/rollouts/r1/command", b'{"action":"pause"}'), msg("fl/d1/heartbeat")
    assert a.keep([command, device]) == [command, device]
    assert b.keep([msg(command.topic, command.payload), device]) == [device], "not filtered: every replica"
    assert a.keep([command]) == [command], "a retry of the same batch keeps its own claims"
    other = msg("ops/ota/rollouts/r1/command", b'{"action":"resume"}')
    assert b.keep([other]) == [other]
    assert redis.pttl(a.key(command)) > 500_000
