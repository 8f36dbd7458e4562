// Fleet table: filters (hw, fw glob, tag, connected, health, id prefix), sort, pages, live refresh.
import { api, h, pill, ago, every } from "/static/api.js";

const PAGE = 50;
const saved = { hw: "", fw: "", tag: "", connected: "", health: "", q: "", sort: "id", cursors: [null] };

function query() {
  const p = new URLSearchParams({ limit: PAGE, sort: saved.sort });
  for (const k of ["hw", "fw", "connected", "health", "q"]) if (saved[k]) p.set(k, saved[k]);
  const [tk, tv] = saved.tag.split("=");
  if (tk && tv !== undefined) p.set(`tag.${tk.trim()}`, tv.trim());
  const cursor = saved.cursors[saved.cursors.length - 1];
  if (cursor) p.set("cursor", cursor);
  return p;
}

function select(id, label, options, value) {
  return h("label", {}, label, h("select", { id }, options.map(([v, t]) => h("option", { value: v, selected: v === value }, t))));
}

export function fleetPage(root) {
  const stats = h("div", { class: "stats", id: "fleet-stats" });
  const hwSel = select("f-hw", "hardware", [["", "any"]], saved.hw);
  const form = h("form", { class: "filters", id: "fleet-filters" },
    hwSel,
    h("label", {}, "firmware (glob)", h("input", { id: "f-fw", value: saved.fw, placeholder: "1.2.*", size: 10 })),
    h("label", {}, "tag key=value", h("input", { id: "f-tag", value: saved.tag, placeholder: "site=lab", size: 12 })),
    select("f-connected", "connected", [["", "any"], ["true", "online"], ["false", "offline"]], saved.connected),
    select("f-health", "health", [["", "any"], ["ok", "ok"], ["watch", "watch"], ["critical", "critical"], ["offline", "offline"]], saved.health),
    h("label", {}, "id prefix", h("input", { id: "f-q", value: saved.q, size: 10 })),
    select("f-sort", "sort", [["id", "id"], ["-last_seen_at", "last seen (newest)"], ["health_score", "health (worst first)"], ["-health_score", "health (best first)"]], saved.sort),
    h("button", { type: "submit" }, "Apply"));
  const body = h("tbody", { id: "fleet-rows" });
  const info = h("span", { class: "muted", id: "fleet-total" });
  const prev = h("button", { class: "secondary", type: "button", id: "prev" }, "‹ Prev");
  const next = h("button", { class: "secondary", type: "button", id: "next" }, "Next ›");
  const err = h("p", { class: "error" });
  root.append(
    h("div", { class: "card" }, h("h1", {}, "Fleet"), stats),
    h("div", { class: "card" }, form, err,
      h("table", { id: "fleet-table" }, h("thead", {}, h("tr", {}, ["device", "hw", "fw", "connected", "last seen", "health", "score", "tags"].map((t) => h("th", {}, t)))), body),
      h("div", { class: "pager" }, prev, next, info)));

  let nextCursor = null;
  async function load() {
    try {
      const page = await api("GET", "/devices?" + query());
      nextCursor = page.next_cursor;
      body.replaceChildren(...page.items.map((d) => h("tr", { "data-id": d.id },
        h("td", { class: "id" }, h("a", { href: `#/device/${encodeURIComponent(d.id)}` }, d.id)),
        h("td", {}, d.hw || "—"), h("td", {}, d.fw || "—"),
        h("td", {}, pill(d.connected ? "online" : "offline", d.connected ? "on" : "off")),
        h("td", {}, ago(d.last_seen_at)),
        h("td", {}, pill(d.health.status)), h("td", {}, d.health.score ?? "—"),
        h("td", { class: "muted" }, Object.entries(d.tags).map(([k, v]) => `${k}=${v}`).join(", ")))));
      const first = (saved.cursors.length - 1) * PAGE;
      info.textContent = page.total ? `${first + 1}–${first + page.items.length} of ${page.total}` : "no device matches";
      prev.disabled = saved.cursors.length <= 1;
      next.disabled = !nextCursor;
      err.textContent = "";
    } catch (e) {
      err.textContent = e.message;
    }
  }
  async function summary() {
    const s = await api("GET", "/fleet/summary").catch(() => null);
    if (!s) return;
    const stat = (n, label) => h("div", { class: "stat" }, h("b", {}, n), h("span", {}, label));
    stats.replaceChildren(stat(s.devices, "devices"), stat(s.connected.true, "online"), stat(s.connected.false, "offline"),
      stat(s.health.ok, "ok"), stat(s.health.watch, "watch"), stat(s.health.critical, "critical"),
      stat(s.rollouts.running, "rollouts running"));
    const sel = hwSel.querySelector("select");
    const have = new Set([...sel.options].map((o) => o.value));
    for (const hw of Object.keys(s.hw)) if (!have.has(hw)) sel.append(h("option", { value: hw, selected: hw === saved.hw }, hw));
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    for (const k of ["hw", "fw", "tag", "connected", "health", "q", "sort"]) saved[k] = document.getElementById(`f-${k}`).value.trim();
    saved.cursors = [null];
    load();
  });
  prev.addEventListener("click", () => { saved.cursors.pop(); load(); });
  next.addEventListener("click", () => { if (nextCursor) { saved.cursors.push(nextCursor); load(); } });
  every(3000, load);
  every(5000, summary);
}
