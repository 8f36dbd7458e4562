"""`python -m shadowsync` / `fleet-shadowsync`."""

from __future__ import annotations

import sys
from typing import Any

from daemons.app import run_daemon
from daemons.config import Settings
from daemons.metrics import DaemonMetrics
from daemons.registry import Registry
from shadowsync.service import ShadowService
from shadowsync.store import ShadowStore


def build(settings: Settings, redis: Any, metrics: DaemonMetrics) -> ShadowService:
    return ShadowService(ShadowStore(redis), Registry(redis), settings.topic_prefix, settings.ops_prefix)


def main(argv: list[str] | None = None) -> int:
    return run_daemon("shadowsync", build, argv)


if __name__ == "__main__":
    sys.exit(main())
