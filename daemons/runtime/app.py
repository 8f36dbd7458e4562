"""Entry point plumbing shared by the daemons: config, logs, metrics, Redis, MQTT, run loop.

`run_daemon` owns the process lifecycle: everything a daemon starts (the metrics server, Redis,
the broker session, and any server its `build` starts) is entered on one `contextlib.ExitStack`
and stopped in reverse order on the way out, whether the daemon stops on SIGTERM or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from daemons.protocol.errors import FleetError
from daemons.runtime import logs
from daemons.runtime.config import Settings, load_settings
from daemons.runtime.metrics import DaemonMetrics, time_redis
from daemons.runtime.mqtt import MqttSession, dealt
from daemons.runtime.notify import Notifier
from daemons.runtime.prefixes import check_prefixes
from daemons.runtime.redisclient import connect_redis
from daemons.runtime.replicas import ReplicaLease, Replicas
from daemons.runtime.runloop import TRANSIENT_ERRORS, Handler, RunLoop, StopFlag

# build(settings, redis, metrics[, resources]) -> Handler. A build that starts servers takes the
# fourth argument and registers how to stop each one on it (`resources.callback(server.close)`).
Build = Callable[..., Handler]


def parse_args(daemon: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"fleet-{daemon}", description=f"fleet {daemon} daemon")
    parser.add_argument("--config", help="TOML configuration file (default: $FLEET_CONFIG)")
    return parser.parse_args(argv)


def open_session(settings: Settings, daemon: str, topics: list[str], metrics: DaemonMetrics,
                 resources: ExitStack) -> MqttSession:
    """Connect the daemon's broker session, closed by `resources`, after probing a `$` prefix
    (runtime/prefixes.py: ConfigError naming the variable when the broker drops such topics).

    `fleet_mqtt_connected{daemon}` follows the connection: 1 from each CONNACK, 0 from each loss
    (paho's connect/disconnect callbacks) and once the session is closed.
    """
    check_prefixes(settings.mqtt_url, settings.topic_prefix, settings.ops_prefix, settings.mqtt_username,
                   settings.mqtt_password)
    gauge = metrics.connected.labels(daemon)
    session = MqttSession(settings, daemon, topics, on_connection=lambda up: gauge.set(1 if up else 0))
    session.on_round_trip = metrics.broker_rtt.labels(daemon).observe
    resources.callback(gauge.set, 0)
    resources.callback(session.close)
    session.connect()
    if not session.wait_subscribed(15.0):
        raise FleetError(f"broker did not grant the subscriptions {session.refused_topics or ''}")
    return session


def watch_redis(metrics: DaemonMetrics, redis: Any, stop: StopFlag, every_s: float = 5.0) -> None:
    """Observe a Redis PING every few seconds (fleet_redis_rtt_seconds) until stop."""

    def run() -> None:
        while True:
            with contextlib.suppress(Exception):  # Redis away: the run loop reports that
                time_redis(metrics, redis)
            if stop.event.wait(every_s):
                return

    threading.Thread(target=run, name="redis-rtt", daemon=True).start()


def hold_replica_index(settings: Settings, daemon: str, redis: Any, stop: StopFlag,
                       resources: ExitStack, ttl_s: float = 30.0, plain: bool = False) -> threading.Event:
    """With FLEET_REPLICA_COUNT > 1, or `plain` (a single replica that receives every message of some
    topics: plain subscriptions): take this replica's index (ConfigError when another live replica
    holds it or runs with another count), keep it while running, give it up on the way out. A
    second unnumbered replica on plain subscriptions is thus refused, not left to apply every
    device message a second time.

    With Redis away at start it waits (before connecting to the broker), as a run loop waits for
    Redis: it cannot know its index is its own before. FleetError if stopped meanwhile.

    Returns an event set when the index was lost to another replica (ours lapsed while Redis was
    away from us): the daemon then stops, rather than handle the same devices as that one.
    """
    lost = threading.Event()
    if settings.replica_count <= 1 and not plain:
        return lost
    lease = ReplicaLease(redis, daemon, settings.client_id_for(daemon), settings.replica_index,
                         settings.replica_count, ttl_s, scope=settings.topic_prefix)
    log = logs.get_logger(daemon)
    while True:
        try:
            lease.take()
            break
        except TRANSIENT_ERRORS as exc:
            log.warning("replica_lease_waiting", error=str(exc))
            if stop.event.wait(1.0):
                raise FleetError("stopped while waiting for Redis to take the replica index") from None

    def keep() -> None:
        while not stop.event.wait(lease.ttl_s / 3):
            try:
                lease.take()
            except FleetError as exc:
                log.error("replica_lease_lost", error=str(exc))
                lost.set()
                stop.request()
                return
            except Exception as exc:  # Redis away: the run loop reports that; try again
                log.warning("replica_lease_refresh_failed", error=str(exc))

    threading.Thread(target=keep, name="replica-lease", daemon=True).start()

    def release() -> None:
        with contextlib.suppress(Exception):  # Redis away: the hold lapses by itself
            lease.release()
    resources.callback(release)
    return lost


def _build(build: Build, settings: Settings, store: Any, metrics: DaemonMetrics,
           resources: ExitStack) -> Handler:
    if len(inspect.signature(build).parameters) >= 4:
        return build(settings, store, metrics, resources)
    return build(settings, store, metrics)


def run_daemon(daemon: str, build: Build, argv: list[str] | None = None,
               once: Callable[[Settings], list[str]] | None = None) -> int:
    """Run one daemon until SIGTERM. Returns the process exit code (0, 1 fatal, 2 configuration).

    sd_notify (daemons.runtime.notify): READY=1 once subscribed, WATCHDOG=1 from the run loop,
    STOPPING=1 on drain. `once(settings)`: topic filters whose messages one replica must handle,
    not each (operator requests). On a broker without shared subscriptions the replicas claim
    those in Redis and split device topics by FLEET_REPLICA_INDEX/COUNT (daemons.runtime.replicas).
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
    with ExitStack() as resources:
        try:
            notifier = Notifier()
            resources.callback(notifier.close)
            store = connect_redis(settings)
            resources.callback(store.close)
            metrics.serve(settings.metrics_port_for(daemon), resources)
            watch_redis(metrics, store, stop)
            lost = hold_replica_index(settings, daemon, store, stop, resources)
            handler = _build(build, settings, store, metrics, resources)
            session = open_session(settings, daemon, handler.topics(), metrics, resources)
            replicas = Replicas.for_broker(settings, store, session.client_id, once(settings) if once else [],
                                           session.shared)
            if settings.replica_count == 1 and not all(  # this replica receives every message of some
                    dealt(prefix, session.shared) for prefix in (settings.topic_prefix, settings.ops_prefix)):
                lost = hold_replica_index(settings, daemon, store, stop, resources, plain=True)
            log.info("started", mqtt=settings.mqtt_url, protocol=session.protocol_version,
                     shared=session.shared, client_id=session.client_id,
                     partition=f"{settings.replica_index}/{settings.replica_count}"
                     if replicas and replicas.partition else None)
            notifier.ready(f"subscribed to {settings.mqtt_url}")
            RunLoop(handler, session, metrics, stop, settings.batch_max, notifier=notifier,
                    replicas=replicas).run()
            log.info("stopped")
            return 1 if lost.is_set() else 0
        except FleetError as exc:
            log.error("fatal", error=str(exc))
            return 1
