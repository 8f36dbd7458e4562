"""`python -m shadowsync` / `fleet-shadowsync`."""

from __future__ import annotations

import sys
from typing import Any

from daemons.registry import Registry
from daemons.runtime.app import run_daemon
from daemons.runtime.config import Settings
from daemons.runtime.metrics import DaemonMetrics
from shadowsync.service import ShadowService
from shadowsync.store import ShadowStore


def build(settings: Settings, redis: Any, metrics: DaemonMetrics) -> ShadowService:
    return ShadowService(ShadowStore(redis), Registry(redis), settings.topic_prefix, settings.ops_prefix)


def main(argv: list[str] | None = None) -> int:
    return run_daemon("shadowsync", build, argv)


if __name__ == "__main__":
    sys.exit(main())
