"""`python -m shadowsync` / `fleet-shadowsync`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

from daemons.registry import Registry
from daemons.runtime.app import run_daemon
from daemons.runtime.config import Settings
from daemons.runtime.metrics import DaemonMetrics, RedisReadings, gauge
from shadowsync.service import ShadowService
from shadowsync.store import ShadowStore


def readings(store: ShadowStore, registry: Registry) -> Iterator[Any]:
    """The fleet as Redis has it now: devices known/online, shadows waiting for their device."""
    known, online = registry.counts()
    backlog, backlog_online, oldest = store.backlog(registry.online_index)
    yield gauge("fleet_devices_known", "Devices in the registry", samples=known)
    yield gauge("fleet_devices_online", "Devices whose last status message said online", samples=online)
    yield gauge("fleet_shadow_delta_backlog", "Devices with desired state not yet reported, by presence",
                ["presence"], {("online",): backlog_online, ("offline",): backlog - backlog_online})
    yield gauge("fleet_shadow_sync_lag_seconds",
                "Age of the oldest desired change an online device has not reported yet",
                samples=max(0.0, time.time() - oldest) if oldest is not None else 0.0)


def build(settings: Settings, redis: Any, metrics: DaemonMetrics) -> ShadowService:
    store, registry = ShadowStore(redis), Registry(redis)
    RedisReadings(metrics, lambda: readings(store, registry))
    return ShadowService(store, registry, settings.topic_prefix, settings.ops_prefix)


def main(argv: list[str] | None = None) -> int:
    # Bulk updates: answered by one replica, also on brokers without shared subscriptions (tags,
    # which name a device, follow the device partition there: daemons.runtime.replicas).
    return run_daemon("shadowsync", build, argv, once=lambda s: [f"{s.ops_prefix}/shadow/bulk"])


if __name__ == "__main__":
    sys.exit(main())
