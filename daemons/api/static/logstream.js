// The live log view: one WebSocket per debug link, one JSON text frame per log batch.
// Close codes: 4403 the link is refused, 4410 the session expired or was closed (docs/API.md §3).
export function openLogStream(url, logEl, stateEl) {
  const ws = new WebSocket(url.replace(/^http/, "ws").replace(/^\//, (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/"));
  const add = (text, cls) => {
    const line = document.createElement("div");
    if (cls) line.className = cls;
    line.textContent = text;
    logEl.appendChild(line);
    while (logEl.childNodes.length > 5000) logEl.removeChild(logEl.firstChild);
    logEl.scrollTop = logEl.scrollHeight;
  };
  ws.onmessage = (ev) => {
    const b = JSON.parse(ev.data);
    if (b.type === "hello") { stateEl.textContent = "live"; return; }
    if (b.dropped) add(`[device dropped ${b.dropped} lines]`, "meta");
    if (b.relay_dropped) add(`[browser too slow: ${b.relay_dropped} lines lost]`, "meta");
    (b.lines || []).forEach((l) => add(l, "line"));
  };
  ws.onclose = (ev) => {
    stateEl.textContent = ev.code === 4403 ? "refused (bad or expired link)"
      : ev.code === 4410 ? "ended (session expired or closed)" : `closed (${ev.code})`;
  };
  return ws;
}
