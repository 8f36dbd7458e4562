// Health: counts by status, the worst devices, cohort medians (healthwatch's summary), latest alerts.
import { api, h, pill, every } from "/static/api.js";

export function healthPage(root) {
  const counts = h("div", { class: "stats", id: "health-counts" });
  const worst = h("tbody", { id: "worst-rows" });
  const cohorts = h("tbody", { id: "cohort-rows" });
  const alerts = h("tbody", { id: "alert-rows" });
  const th = (...t) => h("thead", {}, h("tr", {}, t.map((x) => h("th", {}, x))));
  root.append(h("div", { class: "card" }, h("h1", {}, "Health"), counts),
    h("div", { class: "row" },
      h("div", { class: "card" }, h("h2", {}, "Worst devices"), h("table", {}, th("device", "score"), worst)),
      h("div", { class: "card" }, h("h2", {}, "Cohort medians (hw|fw)"), h("table", {}, th("cohort", "devices", "medians"), cohorts))),
    h("div", { class: "card" }, h("h2", {}, "Latest alerts"), h("table", {}, th("when", "device", "status", "was", "score", "reasons"), alerts)));
  const link = (id) => h("a", { href: `#/device/${encodeURIComponent(id)}` }, id);

  async function load() {
    const s = await api("GET", "/health/summary").catch(() => null);
    if (s) {
      counts.replaceChildren(...Object.entries(s.counts || {}).map(([k, n]) =>
        h("div", { class: "stat" }, h("b", {}, n), pill(k))), h("div", { class: "stat" }, h("b", {}, s.devices ?? 0), h("span", {}, "devices")));
      const rows = (s.worst || []).map((w) => h("tr", {}, h("td", { class: "id" }, link(w.device_id)), h("td", {}, w.score)));
      worst.replaceChildren(...(rows.length ? rows : [h("tr", {}, h("td", { class: "muted", colspan: 2 }, "every scored device is at 100"))]));
      cohorts.replaceChildren(...Object.entries(s.cohorts || {}).map(([k, c]) => h("tr", {}, h("td", {}, k), h("td", {}, c.devices ?? ""),
        h("td", { class: "muted" }, Object.entries(c).filter(([f]) => f !== "devices").map(([f, v]) => `${f} ${typeof v === "number" ? v.toFixed(2) : v}`).join(", ") || "not enough heartbeats yet"))));
    }
    const a = await api("GET", "/health/alerts?limit=50").catch(() => null);
    if (a) {
      alerts.replaceChildren(...a.items.map((x) => h("tr", {},
        h("td", {}, new Date(x.ts * 1000).toLocaleTimeString()), h("td", { class: "id" }, link(x.device_id)),
        h("td", {}, pill(x.status)), h("td", {}, x.previous || "—"), h("td", {}, x.score),
        h("td", { class: "muted" }, (x.reasons || []).map((r) => r.code).join(", ")))));
    }
  }
  every(3000, load);
}
