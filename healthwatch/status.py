"""A device's health status (PROTOCOL §2): an IntEnum, since the streaming state stores the number."""

from __future__ import annotations

from enum import IntEnum


class HealthStatus(IntEnum):
    OK = 0
    WATCH = 1
    CRITICAL = 2
    OFFLINE = 3

    @property
    def label(self) -> str:
        """The name on the wire (`status` of `{p}/{id}/health`, alerts, summary counts)."""
        return self.name.lower()


STATUSES = tuple(s.label for s in HealthStatus)  # ("ok", "watch", "critical", "offline"), by number
