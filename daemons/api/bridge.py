"""The API's one MQTT connection (paho-mqtt 2.x), shared by every request.

Writes follow the daemons' request/answer contract (PROTOCOL §0): subscribe to the request's
`/accepted` and `/rejected` topics (reference-counted, so concurrent requests share them), publish
with a fresh `clientToken`, wait for the answer that echoes it. Live views (logs, rollout status)
`listen` on a topic filter for as long as they are open; nothing is subscribed when nobody looks.

paho runs its network loop in its own thread; answers reach asyncio through
`loop.call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from daemons.protocol.codec import CodecError, decode
from daemons.runtime.config import Settings
from daemons.runtime.mqtt import client_for

Listener = Callable[[str, bytes], None]


def _resolver(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], value: Any) -> Callable[[], None]:
    """A callable for paho's thread that completes `fut` (once) on the event loop."""
    def settle() -> None:
        if not fut.done():
            fut.set_result(value)

    def schedule() -> None:
        loop.call_soon_threadsafe(settle)
    return schedule


class BridgeTimeout(Exception):
    """No answer within the time allowed (the daemon is down or slow)."""


class Bridge:
    def __init__(self, settings: Settings, client_id: str | None = None) -> None:
        self.settings = settings
        self.client_id = client_id or f"fleet-api-{socket.gethostname()}-{secrets.token_hex(3)}"
        self._lock = threading.Lock()
        self._refs: dict[str, int] = {}
        self._subacks: dict[int, Callable[[], None]] = {}
        self._waiters: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._listeners: dict[int, tuple[str, Listener]] = {}
        self._next = 0
        self._connected = threading.Event()
        self._tried = threading.Event()  # the first connection attempt has an outcome
        # Request/answer traffic only: a clean session (nothing to resume after a restart).
        self._client, self._addr = client_for(settings, self.client_id, clean_session=True)
        self._client.reconnect_delay_set(1, 10)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = lambda *a: self._tried.set()  # refused or unreachable
        self._client.on_disconnect = lambda *a: self._connected.clear()
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # -- connection ----------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> bool:
        """Start connecting (paho retries in the background) and wait, up to `timeout`, for the first
        attempt's outcome: True when connected.

        The API serves reads while the broker is away (writes and /healthz answer 503), so a
        broker that is not there yet is not fatal: False says so, as soon as the first attempt is
        refused or finds no broker (paho keeps trying every 1-10 s), not after the whole timeout.
        """
        self._client.connect_async(self._addr.host, self._addr.port, keepalive=30)
        self._client.loop_start()
        self._tried.wait(timeout)
        return self._connected.is_set()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._tried.set()
            return
        with self._lock:
            topics = list(self._refs)
        for topic in topics:  # a clean session forgets them: subscribe again after a reconnect
            client.subscribe(topic, qos=1)
        self._connected.set()
        self._tried.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            done = self._subacks.pop(mid, None)
        if done is not None:
            done()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        if topic.endswith(("/accepted", "/rejected")):
            try:
                body, _ = decode(payload)
            except CodecError:
                body = {}
            token = body.get("clientToken") if isinstance(body, dict) else None
            with self._lock:
                waiter = self._waiters.pop(token, None) if isinstance(token, str) else None
            if waiter is not None:
                waiter(topic, body)
        with self._lock:
            listeners = [f for flt, f in self._listeners.values() if paho.topic_matches_sub(flt, topic)]
        for listener in listeners:
            listener(topic, payload)

    # -- subscriptions -------------------------------------------------------------------------

    async def _subscribe(self, topics: list[str], timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        waits = []
        for topic in topics:
            with self._lock:
                self._refs[topic] = self._refs.get(topic, 0) + 1
                if self._refs[topic] > 1:
                    continue
                fut: asyncio.Future[None] = loop.create_future()
                rc, mid = self._client.subscribe(topic, qos=1)
                if rc != paho.MQTT_ERR_SUCCESS or mid is None:
                    continue  # not connected: _on_connect subscribes it on the reconnect
                self._subacks[mid] = _resolver(loop, fut, None)
            waits.append(fut)
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)

    def _unsubscribe(self, topics: list[str]) -> None:
        with self._lock:
            for topic in topics:
                self._refs[topic] = self._refs.get(topic, 1) - 1
                if self._refs[topic] <= 0:
                    del self._refs[topic]
                    self._client.unsubscribe(topic)

    async def listen(self, topic_filter: str, listener: Listener) -> int:
        """Call `listener(topic, payload)` (from paho's thread) for each message; returns a handle."""
        with self._lock:
            self._next += 1
            handle = self._next
            self._listeners[handle] = (topic_filter, listener)
        try:
            await self._subscribe([topic_filter])
        except BaseException:
            with self._lock:
                self._listeners.pop(handle, None)
            raise
        return handle

    def unlisten(self, handle: int) -> None:
        with self._lock:
            entry = self._listeners.pop(handle, None)
        if entry is not None:
            self._unsubscribe([entry[0]])

    # -- traffic ---------------------------------------------------------------------------------

    def publish(self, topic: str, body: Any, retain: bool = False) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        self._client.publish(topic, payload, qos=1, retain=retain)

    async def request(self, topic: str, body: dict[str, Any], timeout: float = 10.0,
                      answer: str | None = None) -> tuple[bool, dict[str, Any]]:
        """Publish `body` on `topic`; (accepted?, answer body) from `<answer or topic>/accepted|rejected`.

        Raises BridgeTimeout when no answer with our clientToken comes within `timeout` seconds.
        """
        base = answer or topic
        topics = [f"{base}/accepted", f"{base}/rejected"]
        token = secrets.token_hex(12)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[str, dict[str, Any]]] = loop.create_future()

        def done(t: str, b: dict[str, Any]) -> None:
            _resolver(loop, fut, (t, b))()

        with self._lock:
            self._waiters[token] = done
        try:
            await self._subscribe(topics)
            try:
                self.publish(topic, {**body, "clientToken": token})
                got_topic, got = await asyncio.wait_for(fut, timeout)
            finally:
                self._unsubscribe(topics)
        except TimeoutError:
            raise BridgeTimeout(f"no answer on {base}/accepted or /rejected within {timeout:g} s") from None
        finally:
            with self._lock:
                self._waiters.pop(token, None)
        return got_topic.endswith("/accepted"), got
