// Rollouts: create one from a release (stages and gates), live stage progress and counts, commands.
import { api, h, pill, every, can, message } from "/static/api.js";

const FAILED = ["failed", "rolled_back", "rejected", "timed_out"];
const MOVING = ["issued", "in_progress", "pending"];

function field(id, label, value, size = 6) {
  return h("label", {}, label, h("input", { id, value, size }));
}

function bar(counts, total) {
  const n = (keys) => keys.reduce((a, k) => a + (counts[k] || 0), 0);
  const pct = (v) => (total ? (100 * v) / total : 0);
  const succ = pct(counts.succeeded || 0), fail = pct(n(FAILED)), prog = pct(n(MOVING));
  return h("div", { class: "bar", title: JSON.stringify(counts) },
    h("i", { class: "succ", style: `width:${succ}%` }),
    h("i", { class: "fail", style: `left:${succ}%;width:${fail}%` }),
    h("i", { class: "prog", style: `left:${succ + fail}%;width:${prog}%` }));
}

export function rolloutsPage(root) {
  const rows = h("tbody", { id: "rollout-rows" });
  const err = h("p", { class: "error" });
  root.append(h("div", { class: "card" }, h("h1", {}, "Rollouts"), err,
    h("div", { class: "scroll" }, h("table", { id: "rollout-table" }, h("thead", {}, h("tr", {}, ["rollout", "release", "state", "stage", "progress", "counts", "reason", ""].map((t) => h("th", {}, t)))), rows))));

  if (can("operator")) {
    const release = h("select", { id: "ro-release" });
    const msg = h("p", { id: "ro-msg" });
    const form = h("form", { class: "filters", id: "rollout-form" },
      h("label", {}, "release", release),
      field("ro-id", "rollout id", `r-${Math.floor(Date.now() / 1000)}`, 14),
      field("ro-stages", "stages (% of fleet)", "10,50,100", 12),
      field("ro-soak", "soak (s)", "60"), field("ro-success", "success %", "95"),
      field("ro-maxfail", "max failure %", "5"), field("ro-min", "min devices for gate", "3"),
      field("ro-timeout", "job timeout (s)", "600"),
      h("button", { type: "submit", id: "ro-create" }, "Start rollout"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const v = (id) => document.getElementById(id).value.trim();
      const body = { rollout_id: v("ro-id"), version: release.value,
        stages: v("ro-stages").split(",").map((s) => Number(s.trim())),
        soak_s: Number(v("ro-soak")), success_pct: Number(v("ro-success")), max_failure_pct: Number(v("ro-maxfail")),
        min_devices_for_gate: Number(v("ro-min")), timeout_s: Number(v("ro-timeout")) };
      try {
        const s = await api("POST", "/rollouts", body);
        message(msg, `rollout ${s.rollout_id} ${s.state}`, true);
        document.getElementById("ro-id").value = `r-${Math.floor(Date.now() / 1000)}`;
        load();
      } catch (e) {
        message(msg, e.message);
      }
    });
    root.append(h("div", { class: "card" }, h("h2", {}, "New rollout"), form, msg));
    api("GET", "/releases?limit=1000").then((page) => {
      release.replaceChildren(...page.items.map((r) => h("option", { value: r.version }, `${r.version} (${r.hw.join(", ")})`)));
    }).catch((e) => message(msg, e.message));
  }
  if (can("admin")) {
    const msg = h("p");
    const form = h("form", { class: "filters", id: "release-form" },
      h("label", {}, "firmware image", h("input", { type: "file", name: "file", required: true })),
      h("label", {}, "version", h("input", { name: "version", size: 10, required: true })),
      h("label", {}, "hw (comma separated)", h("input", { name: "hw", size: 16, required: true })),
      h("label", {}, "secure version", h("input", { name: "secure_version", value: "0", size: 4 })),
      h("button", { type: "submit" }, "Publish release"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const data = new FormData(form);
      const hw = String(data.get("hw")).split(",").map((s) => s.trim()).filter(Boolean);
      data.delete("hw");
      hw.forEach((x) => data.append("hw", x));
      try {
        const r = await api("POST", "/releases", data);
        message(msg, `release ${r.version} registered (${r.size} bytes)`, true);
      } catch (e) {
        message(msg, e.message);
      }
    });
    root.append(h("div", { class: "card" }, h("h2", {}, "Publish a release"), form, msg));
  }

  async function act(rid, action) {
    try {
      await api("POST", `/rollouts/${encodeURIComponent(rid)}/${action}`);
      err.textContent = "";
    } catch (e) {
      err.textContent = `${action} ${rid}: ${e.message}`;
    }
    load();
  }
  async function load() {
    try {
      const page = await api("GET", "/rollouts?limit=50");
      rows.replaceChildren(...page.items.map((r) => h("tr", { "data-id": r.rollout_id },
        h("td", { class: "id" }, r.rollout_id), h("td", {}, r.version), h("td", { class: "state" }, pill(r.state)),
        h("td", {}, `${r.stage + 1} of ${r.stages.length} (${r.stages[r.stage]}%)`),
        h("td", {}, bar(r.counts, r.devices)),
        h("td", { class: "counts" }, Object.entries(r.counts).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ") || "none yet"),
        h("td", { class: "muted wrap" }, r.reason),
        h("td", { class: "actions" }, can("operator") ? ["pause", "resume", "advance", "abort", "rollback"].map((a) =>
          h("button", { class: a === "abort" || a === "rollback" ? "danger" : "secondary", type: "button", "data-action": a,
            onclick: () => act(r.rollout_id, a) }, a)) : null))));
    } catch (e) {
      err.textContent = e.message;
    }
  }
  every(2000, load);
}
