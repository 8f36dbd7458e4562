"""Remote debugging (PROTOCOL §4): debug/open, signed links, the live log stream over SSE."""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest

from daemons.api import links as debug_links
from daemons.debug.gateway import parse_logs
from daemons.debug.http import FanOut
from daemons.protocol.errors import ConfigError
from tests.support import free_port

LINK_KEY = "a5" * 32


class Sse:
    """Reads a text/event-stream in a thread; events (name, data) arrive on a queue."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        conn.request("GET", f"{parts.path}?{parts.query}")
        # Kept to shut down: closing the response would wait for the reader thread's readline.
        self.sock = conn.sock
        self.response = conn.getresponse()
        assert self.response.status == 200, self.response.status
        self.content_type = self.response.headers.get("Content-Type", "")
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        name, data = "message", []
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    continue
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif not line and data:
                    self.events.put((name, json.loads("\n".join(data))))
                    name, data = "message", []
        except OSError as exc:
            self.events.put(("error", str(exc)))
        finally:
            self.response.close()
            self.events.put(("closed", None))

    def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # the reader sees the end and closes the response
        self.reader.join(10)


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def stream_url(link: str, session_id: str) -> str:
    return link.replace(f"/debug/{session_id}?", f"/debug/{session_id}/stream?", 1)


def start_gateway(daemon: Any, **env: str) -> int:
    port = free_port()
    daemon("daemons.debug.gateway", FLEET_DEBUG_HTTP_PORT=str(port), FLEET_DEBUG_LINK_KEY=LINK_KEY, **env)
    return port


def open_session(ops: Any, o: str, device: str, ttl_s: int = 600) -> dict[str, Any]:
    r = ops.request(f"{o}/debug/open", {"device_id": device, "ttl_s": ttl_s, "operator": "alice"})
    assert r.topic == f"{o}/debug/open/accepted", r.body
    return r.body


def test_open_sets_desired_debug_and_streams_the_device_logs(daemon, probe, prefixes):
    p, o = prefixes
    metrics_port = free_port()
    daemon("shadowsync")
    port = start_gateway(daemon, FLEET_METRICS_PORT=str(metrics_port))
    ops = probe(f"{o}/debug/open/+")
    dev = probe(f"{p}/dbg-1/shadow/update/delta")

    before = time.time()
    r = ops.request(f"{o}/debug/open", {"device_id": "dbg-1", "ttl_s": 600, "operator": "alice",
                                         "clientToken": "tok-1"})
    assert r.topic == f"{o}/debug/open/accepted", r.body
    body = r.body
    sid, expires_at, link = body["session_id"], body["expires_at"], body["link"]
    assert body["clientToken"] == "tok-1"
    assert before + 600 <= expires_at <= time.time() + 602
    assert link.startswith(f"http://127.0.0.1:{port}/debug/{sid}?device=dbg-1&expires={expires_at}&sig=")

    # shadow-sync applied the gateway's desired update: the device sees it as a delta.
    delta = dev.wait(f"{p}/dbg-1/shadow/update/delta").body
    assert delta["state"]["debug"] == {"enabled": True, "until": expires_at, "level": "debug"}

    status, ctype, page = get(link)
    assert status == 200 and ctype.startswith("text/html")
    assert b"EventSource" in page and b"dbg-1" in page and b"<script src" not in page

    other = open_session(ops, o, "dbg-2")
    sse = Sse(stream_url(link, sid))
    sse2 = Sse(stream_url(other["link"], other["session_id"]))
    try:
        assert sse.content_type.startswith("text/event-stream")
        assert sse.next() == ("hello", {"device_id": "dbg-1", "expires_at": expires_at})
        assert sse2.next()[0] == "hello"
        device = probe()
        device.publish(f"{p}/dbg-1/logs", {"lines": ["boot ok", "wifi up"], "dropped": 3,
                                            "dropped_total": 7, "ts": 1700000000}, qos=0)
        name, batch = sse.next()
        assert name == "message"
        assert batch["lines"] == ["boot ok", "wifi up"] and batch["dropped"] == 3
        assert batch["dropped_total"] == 7 and batch["ts"] == 1700000000
        device.publish(f"{p}/dbg-1/logs", raw=b"plain line\nsecond", qos=0)
        assert sse.next()[1]["lines"] == ["plain line", "second"]
        # Published after dbg-1's batches: the first thing dbg-2's stream gets is its own line.
        device.publish(f"{p}/dbg-2/logs", {"lines": ["only dbg-2"]}, qos=0)
        assert sse2.next()[1]["lines"] == ["only dbg-2"]
    finally:
        sse.close()
        sse2.close()

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert "fleet_debug_sessions_opened_total 2.0" in text
    assert "fleet_debug_lines_relayed_total 5.0" in text
    assert 'fleet_debug_lines_dropped_total{where="device"} 3.0' in text
    assert "dbg-1" not in text and "dbg-2" not in text


def test_bad_links_and_bad_requests_get_nothing(daemon, probe, prefixes):
    _, o = prefixes
    metrics_port = free_port()
    start_gateway(daemon, FLEET_METRICS_PORT=str(metrics_port))
    ops = probe(f"{o}/debug/open/+")

    for bad in ({"device_id": "a/b", "ttl_s": 60, "operator": "x"},
                {"device_id": "", "ttl_s": 60, "operator": "x"},
                {"device_id": "d1", "ttl_s": 0, "operator": "x"},
                {"device_id": "d1", "ttl_s": 3601, "operator": "x"},
                {"device_id": "d1", "ttl_s": "60", "operator": "x"},
                {"device_id": "d1", "ttl_s": 60},
                {"device_id": "d1", "ttl_s": 60, "operator": "x", "level": "loud"}):
        r = ops.request(f"{o}/debug/open", {**bad, "clientToken": "bad"})
        assert r.topic == f"{o}/debug/open/rejected", bad
        assert r.body["code"] == 400 and r.body["clientToken"] == "bad" and r.body["message"]
    assert ops.request(f"{o}/debug/open", raw=b"{broken").body["code"] == 400

    a = open_session(ops, o, "dev-a")
    b = open_session(ops, o, "dev-b")
    link_a, sid_a = a["link"], a["session_id"]
    sig = link_a.rsplit("sig=", 1)[1]
    tampered = link_a[:-1] + ("0" if sig[-1] != "0" else "1")
    other_device = link_a.replace("device=dev-a", "device=dev-b")
    longer = link_a.replace(f"expires={a['expires_at']}", f"expires={a['expires_at'] + 3600}")
    b_sig_on_a = link_a.replace(sig, b["link"].rsplit("sig=", 1)[1])
    for bad_link in (tampered, other_device, longer, b_sig_on_a, link_a.split("&sig=")[0]):
        for url in (bad_link, stream_url(bad_link, sid_a)):
            status, _, body = get(url)
            assert status == 403, url
            assert b"dev-a" not in body and b"data:" not in body

    # A short session: the stream ends by itself at expiry, then the link is dead.
    c = open_session(ops, o, "dev-c", ttl_s=2)  # margin for a loaded machine
    sse = Sse(stream_url(c["link"], c["session_id"]))
    try:
        assert sse.next()[0] == "hello"
        assert sse.next(timeout=10) == ("end", {"reason": "expired"})
        assert sse.next(timeout=10)[0] == "closed"
        assert time.time() >= c["expires_at"]
    finally:
        sse.close()
    assert get(c["link"])[0] == 403
    assert get(stream_url(c["link"], c["session_id"]))[0] == 403
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert 'fleet_debug_links_refused_total{reason="bad_signature"} 8.0' in text
    assert 'fleet_debug_links_refused_total{reason="expired"} 2.0' in text
    assert 'fleet_messages_total{daemon="debug-gateway",kind="debug_open",result="rejected_400"} 8.0' in text


def test_fanout_drops_and_counts_for_a_slow_browser():
    fanout = FanOut(queue_max=2)
    slow, other = fanout.subscribe("d1"), fanout.subscribe("d2")
    assert slow is not None and other is not None
    for n in range(5):
        fanout.publish("d1", {"lines": [f"l{n}", "x"]})
    assert slow.queue.qsize() == 2 and other.queue.empty()
    assert fanout.take_dropped(slow) == 6 and fanout.take_dropped(slow) == 0
    fanout.unsubscribe(slow)
    assert fanout.publish("d1", {"lines": ["late"]}) == (0, 0)
    limited = FanOut(max_streams=1)
    assert limited.subscribe("d1") is not None and limited.subscribe("d1") is None


def test_log_payloads_firmware_batches_and_plain_text():
    assert parse_logs(b'{"lines": ["a", 2], "dropped": 1, "dropped_total": 9, "ts": 5, "x": 1}') == {
        "lines": ["a", "2"], "dropped": 1, "dropped_total": 9, "ts": 5}
    assert parse_logs(b"boot\r\nready\n") == {"lines": ["boot", "ready"]}
    assert parse_logs(b"{not json") == {"lines": ["{not json"]}
    assert parse_logs(b'{"lines": "a"}') is None
    assert parse_logs(b"") is None


def test_link_signature_covers_session_device_and_expiry():
    key = bytes(range(32))
    sid = debug_links.new_session_id()
    sig = debug_links.sign(key, sid, "dev-1", 2000)
    assert debug_links.verify(key, sid, "dev-1", "2000", sig, now=1000) is None
    assert debug_links.verify(key, sid, "dev-2", "2000", sig, now=1000) == "bad_signature"
    assert debug_links.verify(key, sid, "dev-1", "2001", sig, now=1000) == "bad_signature"
    other_sid = debug_links.new_session_id()
    assert debug_links.verify(key, other_sid, "dev-1", "2000", sig, now=1000) == "bad_signature"
    assert debug_links.verify(bytes(32), sid, "dev-1", "2000", sig, now=1000) == "bad_signature"
    assert debug_links.verify(key, sid, "dev-1", "2000", sig, now=2000) == "expired"
    assert debug_links.verify(key, sid, "dev-1", "2000", sig.upper(), now=1000) == "malformed"
    assert debug_links.verify(key, sid, "dev/1", "2000", sig, now=1000) == "malformed"
    assert debug_links.verify(key, sid, "dev-1", "-5", sig, now=1000) == "malformed"
    assert debug_links.verify(key, "x", "dev-1", "2000", sig, now=1000) == "malformed"
    path = debug_links.link_path(key, sid, "dev-1", 2000)
    assert path == f"/debug/{sid}?device=dev-1&expires=2000&sig={sig}"


def test_link_key_sources():
    dedicated = debug_links.link_key("11" * 32, "22" * 32)
    assert dedicated.source == "debug_link_key" and dedicated.key == bytes.fromhex("11" * 32)
    derived = debug_links.link_key(None, "22" * 32)
    assert derived.source == "ota_master_key" and len(derived.key) == 32
    assert derived.key != bytes.fromhex("22" * 32)
    assert derived == debug_links.link_key(None, "22" * 32)  # same master key, same links after a restart
    e1, e2 = debug_links.link_key(None, None), debug_links.link_key(None, None)
    assert e1.ephemeral and e1.key != e2.key
    with pytest.raises(ConfigError, match="FLEET_DEBUG_LINK_KEY"):
        debug_links.link_key("zz", None)
    with pytest.raises(ConfigError, match="FLEET_DEBUG_LINK_KEY"):
        debug_links.link_key("abcd", None)
