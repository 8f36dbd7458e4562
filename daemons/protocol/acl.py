"""PROTOCOL §6 access rules, read from a mosquitto `acl_file` so both brokers enforce one file.

Grammar (mosquitto.conf(5), acl_file): `user <name>` starts a block whose `topic [read|write|readwrite|deny]
<topic>` lines apply to that user; `pattern [...] <topic>` lines apply to every client, with `%u` the
username and `%c` the client id; a missing access word means readwrite. Topic lines before any `user`
line are for anonymous clients, which the fleet never allows, so they are refused here.

Decisions follow mosquitto 2.0's default check (src/security_default.c): `deny` entries first, then the
user's own `topic` lines, then the patterns; a pattern never applies to a username or client id holding
`+`, `#` or `/`. Subscriptions: mosquitto grants every SUBSCRIBE and filters each delivered message with
the read rules; the amqtt plugin refuses (SUBACK 0x80) a filter that could match a topic the client may
not read, and filters deliveries as well (`may_subscribe`, `may_read`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

READ, WRITE = 1, 2
_ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": 0}

#: The ACL shipped with the project (mosquitto/acl.conf at the top of the source tree).
SHIPPED_ACL = Path(__file__).resolve().parents[2] / "mosquitto" / "acl.conf"


class AclError(ValueError):
    """An ACL file that cannot be read or has a line outside the grammar above."""


@dataclass(frozen=True)
class Rule:
    access: int  # READ, WRITE, both, or 0 for deny
    topic: str


@dataclass
class Acl:
    """Parsed ACL: per-user rules and patterns, in file order."""

    users: dict[str, list[Rule]] = field(default_factory=dict)
    patterns: list[Rule] = field(default_factory=list)

    def is_account(self, username: str) -> bool:
        """True for a name with a `user` block: a daemon or operator, never a device identity."""
        return username in self.users

    def _rules(self, username: str | None, client_id: str) -> list[Rule]:
        rules = list(self.users.get(username, [])) if username else []
        if username and not (set(username) | set(client_id)) & set("+#/"):
            rules += [Rule(r.access, r.topic.replace("%u", username).replace("%c", client_id))
                      for r in self.patterns]
        return rules

    def may_write(self, username: str | None, client_id: str, topic: str) -> bool:
        return self._decide(username, client_id, topic, WRITE)

    def may_read(self, username: str | None, client_id: str, topic: str) -> bool:
        return self._decide(username, client_id, topic, READ)

    def may_subscribe(self, username: str | None, client_id: str, topic_filter: str) -> bool:
        """Every topic `topic_filter` can match is readable (and none is denied)."""
        rules = self._rules(username, client_id)
        if any(r.access == 0 and filters_overlap(topic_filter, r.topic) for r in rules):
            return False
        return any(r.access & READ and filter_within(topic_filter, r.topic) for r in rules)

    def _decide(self, username: str | None, client_id: str, topic: str, access: int) -> bool:
        rules = self._rules(username, client_id)
        if any(r.access == 0 and topic_matches(topic, r.topic) for r in rules):
            return False
        return any(r.access & access and topic_matches(topic, r.topic) for r in rules)

    def with_prefixes(self, prefix: str, ops_prefix: str) -> Acl:
        """The same rules with the default first levels `fleet`/`fleetops` renamed (FLEET_*_PREFIX)."""
        def rename(topic: str) -> str:
            head, sep, rest = topic.partition("/")
            head = {"fleet": prefix, "fleetops": ops_prefix}.get(head, head)
            return head + sep + rest

        return Acl({u: [Rule(r.access, rename(r.topic)) for r in rules] for u, rules in self.users.items()},
                   [Rule(r.access, rename(r.topic)) for r in self.patterns])


def parse_acl(text: str, source: str = "acl") -> Acl:
    """Parse an acl_file; raises AclError naming the line of anything outside the grammar."""
    acl = Acl()
    current: list[Rule] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "user" and rest:
            current = acl.users.setdefault(rest, [])
            continue
        if word not in ("topic", "pattern") or not rest:
            raise AclError(f"{source}:{number}: expected user, topic or pattern")
        access_word, _, topic = rest.partition(" ")
        if access_word in _ACCESS and topic.strip():
            access, topic = _ACCESS[access_word], topic.strip()
        else:
            access, topic = READ | WRITE, rest
        if word == "pattern":
            acl.patterns.append(Rule(access, topic))
        elif current is None:
            raise AclError(f"{source}:{number}: topic line for anonymous clients (allow_anonymous is false)")
        else:
            current.append(Rule(access, topic))
    return acl


def load_acl(path: str | Path | None = None) -> Acl:
    """Read an ACL file (default: SHIPPED_ACL); raises AclError when it is missing or malformed."""
    target = Path(path) if path else SHIPPED_ACL
    try:
        text = target.read_text()
    except OSError as exc:
        raise AclError(f"{target}: {exc.strerror}") from None
    return parse_acl(text, str(target))


def topic_matches(topic: str, topic_filter: str) -> bool:
    """MQTT topic matching (MQTT 3.1.1 §4.7): does `topic` match `topic_filter`?"""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    t, f = topic.split("/"), topic_filter.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(t) == len(f)


def filter_within(inner: str, outer: str) -> bool:
    """Every topic matching filter `inner` also matches filter `outer`."""
    a, b = inner.split("/"), outer.split("/")
    for i, level in enumerate(b):
        if level == "#":
            return True
        if i >= len(a):
            return False
        if level == "+":
            if a[i] == "#":
                return False
            continue
        if a[i] != level:
            return False
    return len(a) == len(b)


def filters_overlap(x: str, y: str) -> bool:
    """Some topic matches both filters."""
    a, b = x.split("/"), y.split("/")
    for i in range(max(len(a), len(b))):
        la = a[i] if i < len(a) else None
        lb = b[i] if i < len(b) else None
        if la == "#" or lb == "#":
            return True
        if la is None or lb is None:
            return False
        if la != lb and "+" not in (la, lb):
            return False
    return True
