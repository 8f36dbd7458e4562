"""What `fleet up` sees of the system: a subscriber on the system's own topics, and the live panel.

The observer is an operator-side MQTT client (paho, its own thread). It keeps only what the topics
say: presence from `{p}/+/status` (online with a `ts` from this run), health from `{p}/+/health`,
reported shadow values from `{p}/+/shadow/update/accepted`, device OTA progress from
`{p}/+/ota/status`, shadow reads from `{p}/+/shadow/get/+`, rollout status from
`{o}/ota/rollouts/+/status`, and every answer on `{o}/.../accepted|rejected`. It never looks into
the simulator.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as paho
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from daemons.protocol.codec import CodecError, decode, encode
from daemons.runtime.mqtt import make_client


@dataclass
class Seen:
    """The facts the topics gave so far (read under Observer.cond)."""

    online: set[str] = field(default_factory=set)  # status online, ts of this run
    ever_online: set[str] = field(default_factory=set)
    offline: set[str] = field(default_factory=set)
    health: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasons_ever: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> {code: detail}
    shadow_read: set[str] = field(default_factory=set)  # devices whose shadow get was answered
    reported: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> merged reported
    reported_at: dict[tuple[str, str], float] = field(default_factory=dict)  # (device, key) -> time
    ota: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> last ota/status
    rollouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # clientToken or topic -> body
    messages: int = 0


class Observer:
    """Subscribe, then read `seen` under `cond`; `wait(pred, timeout)` returns when pred() holds."""

    def __init__(self, mqtt_url: str, prefix: str, ops: str, since: float, username: str | None = None,
                 password: str | None = None) -> None:
        self.p, self.o = prefix, ops
        self.since = since
        self.seen = Seen()
        self.cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client, addr = make_client(mqtt_url, f"fleet-up-{int(since)}", protocol=paho.MQTTv311,
                                        max_inflight=1000, username=username, password=password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(addr.host, addr.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(15):
            raise TimeoutError(f"no SUBACK from {mqtt_url}")

    def _on_connect(self, client: paho.Client, *_a: Any) -> None:
        p, o = self.p, self.o
        client.subscribe([(t, 1) for t in (
            f"{p}/+/status", f"{p}/+/health", f"{p}/+/shadow/update/accepted", f"{p}/+/shadow/get/+",
            f"{p}/+/ota/status",
            f"{o}/ota/rollouts/+/status", f"{o}/ota/rollouts/+/command/+", f"{o}/shadow/bulk/+",
            f"{o}/debug/open/+")])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, body: dict[str, Any]) -> None:
        self.client.publish(topic, encode(body), qos=1).wait_for_publish(10)

    def wait(self, pred: Callable[[], bool], timeout: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return False
                self.cond.wait(min(left, 0.5))
        return True

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            body, _ = decode(bytes(msg.payload)) if msg.payload else ({}, "json")
        except CodecError:
            return
        parts = msg.topic.split("/")
        with self.cond:
            self.seen.messages += 1
            self._fold(parts, body)
            self.cond.notify_all()

    def _fold(self, parts: list[str], body: dict[str, Any]) -> None:
        s = self.seen
        if parts[0] == self.p and len(parts) >= 3:
            device, rest = parts[1], "/".join(parts[2:])
            if rest == "status":
                if body.get("online") is True and body.get("ts", 0) >= self.since - 5:
                    s.online.add(device)
                    s.ever_online.add(device)
                    s.offline.discard(device)
                elif body.get("online") is False:
                    s.online.discard(device)
                    s.offline.add(device)
            elif rest == "health" and body:
                s.health[device] = body
                seen = s.reasons_ever.setdefault(device, {})
                for r in body.get("reasons", []):
                    if isinstance(r, dict):
                        seen.setdefault(str(r.get("code")), str(r.get("detail", "")))
                if body.get("status") == "offline":
                    seen.setdefault("offline", "status offline")
            elif rest == "shadow/update/accepted":
                reported = (body.get("state") or {}).get("reported")
                if isinstance(reported, dict):
                    now = time.monotonic()
                    s.reported.setdefault(device, {}).update(reported)
                    for key in reported:
                        s.reported_at[(device, key)] = now
            elif rest in ("shadow/get/accepted", "shadow/get/rejected"):  # 404: no shadow yet
                s.shadow_read.add(device)
            elif rest == "ota/status":
                s.ota[device] = body
            return
        if parts[:3] == [self.o, "ota", "rollouts"] and len(parts) == 5 and parts[4] == "status":
            s.rollouts[parts[3]] = body
            return
        key = body.get("clientToken") or "/".join(parts)
        s.answers[str(key)] = {"topic": "/".join(parts), **body}

    # -- the live panel ------------------------------------------------------------------------------

    def panel(self, devices: int, title: str) -> Panel:
        with self.cond:
            s = self.seen
            online = len(s.online)
            counts: dict[str, int] = {}
            for h in s.health.values():
                status = str(h.get("status"))
                counts[status] = counts.get(status, 0) + 1
            rollouts = [(rid, dict(r)) for rid, r in s.rollouts.items()]
            messages = s.messages
        fleet = Table.grid(padding=(0, 2))
        fleet.add_row("online", ProgressBar(total=max(devices, 1), completed=online, width=30),
                      f"[bold]{online}[/] / {devices}")
        healthy = counts.get("ok", 0)
        fleet.add_row("healthy", ProgressBar(total=max(sum(counts.values()), 1), completed=healthy, width=30),
                      "  ".join(f"{k} [bold]{v}[/]" for k, v in sorted(counts.items())) or "-")
        for rid, r in rollouts[-2:]:
            c = r.get("counts", {})
            stages = r.get("stages", [])
            fleet.add_row(f"rollout {rid}",
                          ProgressBar(total=max(devices, 1), completed=c.get("succeeded", 0), width=30),
                          f"{r.get('version')} [bold]{r.get('state')}[/], stage {r.get('stage', 0) + 1}/"
                          f"{len(stages)} ({r.get('stage_pct')} %): succeeded {c.get('succeeded', 0)}, "
                          f"failed {c.get('failed', 0) + c.get('rolled_back', 0)}")
        fleet.add_row("messages seen", "", str(messages))
        return Panel(fleet, title=title, border_style="cyan")


def stream_debug_lines(link: str, want: int, timeout: float) -> list[str]:
    """Open a debug link's WebSocket (the page's `/ws`, served by fleet-api) and return the first
    `want` log lines (fewer when the session ends or `timeout` passes)."""
    import json

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    u = urlparse(link)
    url = f"{'wss' if u.scheme == 'https' else 'ws'}://{u.netloc}{u.path.rstrip('/')}/ws?{u.query}"
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ConnectionClosed, TimeoutError), connect(url, open_timeout=timeout) as ws:
        while len(lines) < want and (left := deadline - time.monotonic()) > 0:
            frame = json.loads(ws.recv(timeout=left))
            if frame.get("type") == "logs":
                lines += [str(x) for x in frame.get("lines", [])]
    return lines[:want]
