"""Entry point plumbing shared by the daemons: config, logs, metrics, Redis, MQTT, run loop."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import redis

from daemons.protocol.errors import FleetError
from daemons.runtime import logs
from daemons.runtime.config import Settings, load_settings
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.mqtt import MqttSession
from daemons.runtime.notify import Notifier
from daemons.runtime.runloop import Handler, RunLoop, StopFlag


def connect_redis(settings: Settings) -> Any:
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(settings.redis_url, decode_responses=True)
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


def parse_args(daemon: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"fleet-{daemon}", description=f"fleet {daemon} daemon")
    parser.add_argument("--config", help="TOML configuration file (default: $FLEET_CONFIG)")
    return parser.parse_args(argv)


def run_daemon(
    daemon: str,
    build: Callable[[Settings, Any, DaemonMetrics], Handler],
    argv: list[str] | None = None,
) -> int:
    """Run one daemon until SIGTERM. Returns the process exit code."""
    args = parse_args(daemon, argv)
    try:
        settings = load_settings(daemon, args.config)
    except FleetError as exc:
        print(f"fleet-{daemon}: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    log = logs.get_logger(daemon)
    stop = StopFlag()
    stop.install()
    metrics = DaemonMetrics(daemon)
    store = connect_redis(settings)
    session: MqttSession | None = None
    notifier = Notifier()  # sd_notify: READY=1 once subscribed, WATCHDOG=1 from the run loop
    try:
        metrics.serve(settings.metrics_port_for(daemon))
        handler = build(settings, store, metrics)
        session = MqttSession(settings, daemon, handler.topics())
        session.connect()
        if not session.wait_subscribed(15.0):
            raise FleetError(f"broker did not grant the subscriptions {session.refused_topics or ''}")
        metrics.connected.labels(daemon).set(1)
        log.info("started", mqtt=settings.mqtt_url, protocol=session.protocol_version,
                 shared=session.shared, client_id=session.client_id)
        notifier.ready(f"subscribed to {settings.mqtt_url}")
        RunLoop(handler, session, metrics, stop, settings.batch_max, notifier=notifier).run()
        log.info("stopped")
        return 0
    except FleetError as exc:
        log.error("fatal", error=str(exc))
        return 1
    finally:
        if session is not None:
            session.close()
        store.close()
        notifier.close()
