"""The debug gateway's browser side: a log page and its Server-Sent Events stream.

`GET /debug/<session>?device=&expires=&sig=` is a small self-contained HTML page;
`GET /debug/<session>/stream?<same query>` streams the device's log batches as SSE events while
the link is valid and ends at its expiry. A bad link gets 403 and no data. Log batches reach the
streams through `FanOut`: bounded queues per browser, so a slow browser loses lines (counted and
reported to it) instead of holding memory or the MQTT loop.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from daemons.api.links import verify
from daemons.runtime.logs import get_logger

QUEUE_MAX = 256  # log batches waiting per browser
MAX_STREAMS = 64  # open streams per process: each holds a thread
KEEPALIVE_S = 15.0

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fleet debug: {device}</title>
<style>body{{font:13px monospace;margin:0;background:#111;color:#ddd}}
header{{padding:6px 10px;background:#222;position:sticky;top:0}}
pre{{margin:0;padding:6px 10px;white-space:pre-wrap}}.meta{{color:#e90}}</style></head>
<body><header>device <b id="dev"></b> &middot; link valid until <span id="until"></span>
&middot; <span id="state">connecting</span></header><pre id="log"></pre>
<script>
(function () {{
  var device = {device_json}, until = {expires};
  document.getElementById("dev").textContent = device;
  document.getElementById("until").textContent = new Date(until * 1000).toISOString();
  var log = document.getElementById("log"), state = document.getElementById("state");
  function add(text, cls) {{
    var line = document.createElement("div");
    if (cls) line.className = cls;
    line.textContent = text;
    log.appendChild(line);
    while (log.childNodes.length > 5000) log.removeChild(log.firstChild);
    window.scrollTo(0, document.body.scrollHeight);
  }}
  var es = new EventSource(location.pathname.replace(/\\/$/, "") + "/stream" + location.search);
  es.addEventListener("hello", function () {{ state.textContent = "live"; }});
  es.onmessage = function (ev) {{
    var b = JSON.parse(ev.data);
    if (b.dropped) add("[device dropped " + b.dropped + " lines]", "meta");
    if (b.relay_dropped) add("[browser too slow: " + b.relay_dropped + " lines lost]", "meta");
    (b.lines || []).forEach(function (l) {{ add(l); }});
  }};
  es.addEventListener("end", function () {{ state.textContent = "ended (link expired)"; es.close(); }});
  es.onerror = function () {{ if (es.readyState === 2) state.textContent = "closed"; }};
}})();
</script></body></html>
"""


class Subscriber:
    def __init__(self, device_id: str, maxsize: int) -> None:
        self.device_id = device_id
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize)
        self.dropped = 0  # lines lost since the last event sent, guarded by FanOut's lock


class FanOut:
    """Thread-safe: the MQTT loop publishes, HTTP threads subscribe and read."""

    def __init__(self, queue_max: int = QUEUE_MAX, max_streams: int = MAX_STREAMS) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscriber]] = {}
        self._count = 0
        self.queue_max = queue_max
        self.max_streams = max_streams

    def subscribe(self, device_id: str) -> Subscriber | None:
        with self._lock:
            if self._count >= self.max_streams:
                return None
            sub = Subscriber(device_id, self.queue_max)
            self._subs.setdefault(device_id, set()).add(sub)
            self._count += 1
            return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            subs = self._subs.get(sub.device_id)
            if subs is not None and sub in subs:
                subs.discard(sub)
                self._count -= 1
                if not subs:
                    del self._subs[sub.device_id]

    def publish(self, device_id: str, batch: dict[str, Any]) -> tuple[int, int]:
        """(browsers reached, lines dropped because a browser's queue was full)."""
        reached = dropped = 0
        with self._lock:
            for sub in self._subs.get(device_id, ()):
                try:
                    sub.queue.put_nowait(batch)
                    reached += 1
                except queue.Full:
                    sub.dropped += len(batch["lines"])
                    dropped += len(batch["lines"])
        return reached, dropped

    def take_dropped(self, sub: Subscriber) -> int:
        with self._lock:
            n, sub.dropped = sub.dropped, 0
            return n


def _event(data: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: the stream's end is the connection's end, no chunked encoding needed.
    server_version = "fleet-debug"
    gateway: DebugHttp

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the query holds the signature: keep URLs out of the logs

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        self.wfile.write(body)

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        stream = len(parts) == 3 and parts[2] == "stream"
        if parts[0] != "debug" or len(parts) not in (2, 3) or (len(parts) == 3 and not stream):
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")
            return
        query = parse_qs(url.query)
        device, expires, sig = (query.get(k, [""])[0] for k in ("device", "expires", "sig"))
        refused = verify(self.gateway.key, parts[1], device, expires, sig, self.gateway.clock())
        if refused is not None:
            self.gateway.on_refused(refused)
            self._send(HTTPStatus.FORBIDDEN, "text/plain; charset=utf-8",
                       b"forbidden: link expired, tampered or for another device\n")
            return
        if stream:
            self._stream(device, int(expires))
        else:
            page = PAGE.format(device=device, device_json=orjson.dumps(device).decode(), expires=int(expires))
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Security-Policy",
                             "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                             "connect-src 'self'")
            body = page.encode()
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self._common_headers()
            self.end_headers()
            self.wfile.write(body)

    def _stream(self, device: str, expires_at: int) -> None:
        gw = self.gateway
        sub = gw.fanout.subscribe(device)
        if sub is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", b"too many streams\n")
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("X-Accel-Buffering", "no")  # nginx would hold the events back
            self._common_headers()
            self.end_headers()
            # Sent once subscribed: from here on no batch of this device is missed.
            self.wfile.write(_event({"device_id": device, "expires_at": expires_at}, "hello"))
            self.wfile.flush()
            while True:
                left = expires_at - gw.clock()
                if left <= 0:
                    self.wfile.write(_event({"reason": "expired"}, "end"))
                    break
                try:
                    batch = sub.queue.get(timeout=min(left, KEEPALIVE_S))
                except queue.Empty:
                    self.wfile.write(b": keepalive\n\n")  # finds browsers that went away
                    self.wfile.flush()
                    continue
                lost = gw.fanout.take_dropped(sub)
                gw.on_relayed(len(batch["lines"]))  # counted first: a reader may look right after
                self.wfile.write(_event({**batch, "relay_dropped": lost} if lost else batch))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            gw.fanout.unsubscribe(sub)
            self.close_connection = True


class DebugHttp:
    """The HTTP server in its own threads; `start()` binds (failing early) and serves."""

    def __init__(self, host: str, port: int, key: bytes, fanout: FanOut,
                 on_refused: Callable[[str], None], on_relayed: Callable[[int], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.fanout = fanout
        self.on_refused = on_refused
        self.on_relayed = on_relayed
        self.clock = clock
        handler = type("Handler", (_Handler,), {"gateway": self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.log = get_logger("debug-http")

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, name="debug-http", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
