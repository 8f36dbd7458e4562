"""Entry point plumbing shared by the daemons: config, logs, metrics, Redis, MQTT, run loop."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any

import redis

from daemons.protocol.errors import FleetError
from daemons.runtime import logs
from daemons.runtime.config import Settings, load_settings
from daemons.runtime.metrics import DaemonMetrics, time_redis
from daemons.runtime.mqtt import MqttSession
from daemons.runtime.notify import Notifier
from daemons.runtime.once import ClaimOnce
from daemons.runtime.runloop import Handler, RunLoop, StopFlag


def connect_redis(settings: Settings) -> Any:
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(settings.redis_url, decode_responses=True)
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


def watch_redis(metrics: DaemonMetrics, redis: Any, stop: StopFlag, every_s: float = 5.0) -> None:
    """Observe a Redis PING every few seconds (fleet_redis_rtt_seconds) until stop."""

    def run() -> None:
        while True:
            with contextlib.suppress(Exception):  # Redis away: the run loop reports that
                time_redis(metrics, redis)
            if stop.event.wait(every_s):
                return

    threading.Thread(target=run, name="redis-rtt", daemon=True).start()


def parse_args(daemon: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"fleet-{daemon}", description=f"fleet {daemon} daemon")
    parser.add_argument("--config", help="TOML configuration file (default: $FLEET_CONFIG)")
    return parser.parse_args(argv)


def run_daemon(
    daemon: str,
    build: Callable[[Settings, Any, DaemonMetrics], Handler],
    argv: list[str] | None = None,
    once: Callable[[Settings], list[str]] | None = None,
) -> int:
    """Run one daemon until SIGTERM. Returns the process exit code.

    `once(settings)`: topic filters whose messages one replica must handle, not each (operator
    commands); on a broker without shared subscriptions the replicas claim them in Redis.
    """
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
        session.on_round_trip = metrics.broker_rtt.labels(daemon).observe
        watch_redis(metrics, store, stop)
        session.connect()
        if not session.wait_subscribed(15.0):
            raise FleetError(f"broker did not grant the subscriptions {session.refused_topics or ''}")
        metrics.connected.labels(daemon).set(1)
        log.info("started", mqtt=settings.mqtt_url, protocol=session.protocol_version,
                 shared=session.shared, client_id=session.client_id)
        notifier.ready(f"subscribed to {settings.mqtt_url}")
        claim = ClaimOnce(store, session.client_id, once(settings)) if once and not session.shared else None
        RunLoop(handler, session, metrics, stop, settings.batch_max, notifier=notifier, claim=claim).run()
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
