"""The one run loop every daemon shares.

Drain what has arrived (up to `batch_max`), let the domain handler do one Redis round trip for
the batch, publish what it returns, then PUBACK the batch. On SIGTERM: stop taking work, finish
what was received, disconnect, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis

from daemons.protocol.messages import Inbound, Outcome, Publish
from daemons.runtime.logs import get_logger
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.notify import Notifier

# Errors of the infrastructure (Redis away): the batch is kept and retried, nothing is acked.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,  # Redis Cluster: a slot's master gone, no failover yet
)


class Handler(Protocol):
    """A domain service: decoded messages in, what to publish out."""

    def topics(self) -> list[str]: ...

    def handle(self, batch: list[Inbound]) -> Outcome: ...

    def tick(self, now: float) -> Outcome: ...

    tick_interval_s: float


class Transport(Protocol):
    inbox: queue.Queue[Inbound]

    def deliver(self, publishes: list[Publish], inbound: list[Inbound]) -> None: ...

    def settle(self) -> None: ...

    @property
    def unsettled(self) -> int: ...


class ReplicaRules(Protocol):
    """daemons.runtime.replicas.Replicas: which messages of a batch this replica handles."""

    def keep(self, batch: list[Inbound]) -> list[Inbound]: ...


class StopFlag:
    """Set by the first SIGTERM/SIGINT; the second one ends the process at once."""

    def __init__(self) -> None:
        self.event = threading.Event()

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self) -> None:
        self.event.set()

    def install(self) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            if self.event.is_set():
                os._exit(128 + signum)
            self.event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)


def take_batch(inbox: queue.Queue[Inbound], limit: int, timeout: float) -> list[Inbound]:
    try:
        first = inbox.get(timeout=timeout)
    except queue.Empty:
        return []
    batch = [first]
    while len(batch) < limit:
        try:
            batch.append(inbox.get_nowait())
        except queue.Empty:
            break
    return batch


class RunLoop:
    def __init__(
        self,
        handler: Handler,
        transport: Transport,
        metrics: DaemonMetrics,
        stop: StopFlag,
        batch_max: int = 500,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        replicas: ReplicaRules | None = None,
    ) -> None:
        self.handler = handler
        self.transport = transport
        self.metrics = metrics
        self.stop = stop
        self.batch_max = batch_max
        self.clock = clock
        # Pinged once per iteration (rate-limited inside): a loop stuck on Redis stops pinging.
        self.notifier = notifier or Notifier({})
        # Without shared subscriptions: messages another replica claimed or owns are acked, not handled.
        self.replicas = replicas
        self.log = get_logger("runloop", daemon=metrics.daemon)
        self._next_tick = clock() + handler.tick_interval_s

    def run(self) -> None:
        while not self.stop.requested:
            self.step(timeout=0.05)
        self.notifier.stopping()
        self.drain()

    def step(self, timeout: float) -> int:
        self.notifier.watchdog()
        self.transport.settle()
        # While answers await the broker's PUBACK, come back soon to acknowledge their batch.
        if self.transport.unsettled:
            timeout = min(timeout, 0.002)
        wait = max(0.0, min(timeout, self._next_tick - self.clock()))
        batch = take_batch(self.transport.inbox, self.batch_max, wait)
        if batch:
            self.process(batch)
        now = self.clock()
        if now >= self._next_tick:
            self._next_tick = now + self.handler.tick_interval_s
            self.deliver(self._guarded(lambda: self.handler.tick(now)), [])
        return len(batch)

    def drain(self, settle_s: float = 5.0) -> None:
        """Finish what was already received; what arrives later stays unacked for redelivery."""
        while True:
            batch = take_batch(self.transport.inbox, self.batch_max, 0.2)
            if not batch:
                break
            self.notifier.watchdog()
            self.process(batch)
        deadline = time.monotonic() + settle_s
        while self.transport.unsettled and time.monotonic() < deadline:
            self.transport.settle()
            time.sleep(0.005)

    def process(self, batch: list[Inbound]) -> None:
        started = time.perf_counter()
        outcome = self._handle_with_retry(batch)
        self.deliver(outcome, batch)
        self.metrics.batches.labels(self.metrics.daemon).observe(time.perf_counter() - started)
        self.metrics.batch_size.labels(self.metrics.daemon).observe(len(batch))

    def deliver(self, outcome: Outcome, batch: list[Inbound]) -> None:
        # Count, publish, then acknowledge (once the broker has the answers): the effect is
        # already durable in Redis.
        for kind, result in outcome.counts:
            self.metrics.count(kind, result)
        self.transport.deliver(outcome.publishes, batch)

    def _handle_with_retry(self, batch: list[Inbound]) -> Outcome:
        delay = 0.1
        while True:
            mine = batch
            try:
                if self.replicas is not None:
                    mine = self.replicas.keep(batch)
                outcome = self.handler.handle(mine) if mine else Outcome()
                if len(mine) < len(batch):  # fleet_messages_total{kind="message",result="other_replica"}
                    self.metrics.count("message", "other_replica", len(batch) - len(mine))
                return outcome
            except TRANSIENT_ERRORS as exc:
                self.metrics.failures.labels(self.metrics.daemon, type(exc).__name__).inc()
                self.log.warning("batch_retry", error=str(exc), size=len(batch))
                if self.stop.requested and delay >= 5:
                    raise
                # Retrying is progress (Redis refused, not hung): the watchdog is for a stuck loop.
                self.notifier.watchdog()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:
                # A bug must not stall the queue: isolate the message that triggers it.
                self.log.exception("batch_failed", size=len(batch))
                return self._one_by_one(mine)

    def _one_by_one(self, batch: list[Inbound]) -> Outcome:
        total = Outcome()
        for message in batch:
            try:
                total.extend(self.handler.handle([message]))
            except TRANSIENT_ERRORS:
                raise
            except Exception:
                self.log.exception("message_failed", topic=message.topic)
                total.count("message", "internal_error")
        return total

    def _guarded(self, fn: Callable[[], Outcome]) -> Outcome:
        try:
            return fn()
        except Exception:
            self.log.exception("tick_failed")
            return Outcome()
