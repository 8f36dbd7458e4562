// Device page: shadow (desired/reported/delta) with a desired editor, health, OTA job, tags, debug mode.
import { api, h, pill, ago, json, every, can, message } from "/static/api.js";
import { openLogStream } from "/static/logstream.js";

export function devicePage(root, id) {
  const head = h("div", { class: "card" }, h("h1", {}, id));
  const health = h("div", { class: "card", id: "health-card" }, h("h2", {}, "Health"));
  const shadow = h("div", { class: "card", id: "shadow-card" }, h("h2", {}, "Shadow"));
  const ota = h("div", { class: "card", id: "ota-card" }, h("h2", {}, "OTA job"));
  const tags = h("div", { class: "card", id: "tags-card" }, h("h2", {}, "Tags"));
  const debug = h("div", { class: "card", id: "debug-card" }, h("h2", {}, "Debug mode"));
  const live = {
    head: h("div"), health: h("div"), shadow: h("div", { id: "shadow-live" }), ota: h("div"), tags: h("div"),
  };
  head.append(live.head);
  health.append(live.health);
  shadow.append(live.shadow);
  ota.append(live.ota);
  tags.append(live.tags);
  root.append(head, h("div", { class: "row" }, shadow, h("div", { style: "flex:1 1 380px" }, health, ota, tags)), debug);

  let current = null;
  if (can("operator")) {
    const area = h("textarea", { id: "desired-editor", spellcheck: "false" });
    const version = h("input", { id: "desired-version", size: 6, placeholder: "any" });
    const msg = h("p", { id: "desired-msg" });
    const save = h("button", { id: "desired-save", type: "button" }, "Save desired");
    const reset = h("button", { class: "secondary", type: "button" }, "Load current");
    reset.addEventListener("click", () => {
      area.value = JSON.stringify(current?.shadow?.state?.desired ?? {}, null, 2);
      version.value = current?.shadow?.version ?? "";
    });
    save.addEventListener("click", async () => {
      let desired;
      try {
        desired = JSON.parse(area.value || "{}");
      } catch (e) {
        message(msg, `not JSON: ${e.message}`);
        return;
      }
      const body = { state: { desired } };
      if (version.value.trim()) body.version = Number(version.value);
      try {
        const r = await api("PATCH", `/devices/${encodeURIComponent(id)}/shadow`, body);
        message(msg, `accepted: version ${r.version}`, true);
        version.value = "";
        refresh();
      } catch (e) {
        message(msg, e.status === 409 ? `409 conflict: ${e.problem?.detail}` : e.message);
      }
    });
    shadow.append(h("h2", {}, "Edit desired"), h("p", { class: "muted" },
      "A patch merged into desired (null removes a field). With a version, the update is refused (409) unless it is current."),
      area, h("div", { class: "filters" }, h("label", {}, "expected version", version), save, reset), msg);

    const tagInput = h("input", { id: "tags-input", size: 30, placeholder: "site=lab, floor=2" });
    const tagMsg = h("p");
    const tagSave = h("button", { id: "tags-save", type: "button" }, "Save tags");
    tagSave.addEventListener("click", async () => {
      const body = {};
      for (const part of tagInput.value.split(",").map((s) => s.trim()).filter(Boolean)) {
        const [k, ...v] = part.split("=");
        body[k.trim()] = v.join("=").trim();
      }
      try {
        await api("PUT", `/devices/${encodeURIComponent(id)}/tags`, body);
        message(tagMsg, "saved", true);
        refresh();
      } catch (e) {
        message(tagMsg, e.message);
      }
    });
    tags.append(h("div", { class: "filters" }, tagInput, tagSave), tagMsg);

    const ttl = h("select", { id: "debug-ttl" }, [["300", "5 min"], ["900", "15 min"], ["3600", "1 hour"]].map(([v, t]) => h("option", { value: v }, t)));
    const open = h("button", { id: "debug-open", type: "button" }, "Debug mode");
    const stop = h("button", { id: "debug-stop", class: "danger", type: "button", disabled: true }, "Stop");
    const status = h("span", { class: "muted", id: "debug-state" }, "off");
    const link = h("a", { id: "debug-link", target: "_blank" });
    const view = h("div", { class: "logview", id: "debug-log" });
    let ws = null;
    open.addEventListener("click", async () => {
      try {
        const s = await api("POST", `/devices/${encodeURIComponent(id)}/debug`, { ttl_s: Number(ttl.value) });
        link.href = s.link;
        link.textContent = "open the log page in a new tab";
        const u = new URL(s.link);
        if (ws) ws.close();
        view.replaceChildren();
        ws = openLogStream(u.pathname + "/ws" + u.search, view, status);
        stop.disabled = false;
      } catch (e) {
        status.textContent = e.message;
      }
    });
    stop.addEventListener("click", async () => {
      await api("DELETE", `/devices/${encodeURIComponent(id)}/debug`).catch(() => null);
      stop.disabled = true;
    });
    debug.append(h("div", { class: "filters" }, ttl, open, stop, status, link), view);
  } else {
    debug.append(h("p", { class: "muted" }, "Read-only: an operator token opens debug sessions."));
  }

  async function refresh() {
    try {
      current = await api("GET", `/devices/${encodeURIComponent(id)}`);
    } catch (e) {
      live.head.replaceChildren(h("p", { class: "error" }, e.message));
      return;
    }
    const d = current;
    live.head.replaceChildren(h("div", { class: "stats" },
      h("div", { class: "stat" }, pill(d.connected ? "online" : "offline", d.connected ? "on" : "off"), h("span", {}, " connection")),
      h("div", { class: "stat" }, h("b", {}, d.hw || "—"), h("span", {}, "hardware")),
      h("div", { class: "stat" }, h("b", { id: "device-fw" }, d.fw || "—"), h("span", {}, "firmware")),
      h("div", { class: "stat" }, h("b", {}, ago(d.last_seen_at)), h("span", {}, "last seen"))));
    live.health.replaceChildren(h("div", { class: "stats" },
      h("div", { class: "stat" }, h("b", {}, d.health.score ?? "—"), h("span", {}, "score")),
      h("div", { class: "stat" }, pill(d.health.status), h("span", {}, " status"))),
      ...(d.health.reasons.length ? d.health.reasons.map((r) => h("p", { class: "reason" }, h("code", {}, r.code), " ", r.detail || ""))
        : [h("p", { class: "muted" }, "no reasons: healthy or not scored yet")]));
    const st = d.shadow?.state || {};
    live.shadow.replaceChildren(d.shadow ? h("p", { class: "muted" }, `version ${d.shadow.version}`) : h("p", { class: "muted" }, "no shadow yet"),
      h("h2", {}, "desired"), h("div", { id: "shadow-desired" }, json(st.desired)),
      h("h2", {}, "reported"), h("div", { id: "shadow-reported" }, json(st.reported)),
      h("h2", {}, "delta"), h("div", { id: "shadow-delta" }, json(st.delta)),
      h("p", { class: "muted" }, d.named_shadows.length ? `named shadows: ${d.named_shadows.join(", ")}` : ""));
    const otaClass = (s) => (s === "succeeded" ? "completed" : ["pending", "issued", "in_progress"].includes(s) ? "running" : "halted");
    live.ota.replaceChildren(d.ota ? h("p", { id: "ota-now" }, `rollout ${d.ota.rollout_id}: `, pill(d.ota.state || "issued", otaClass(d.ota.state || "issued")))
      : h("p", { class: "muted" }, "no job"));
    live.tags.replaceChildren(h("p", { id: "tags-now" }, Object.entries(d.tags).map(([k, v]) => `${k}=${v}`).join(", ") || "no tags"));
  }
  every(2000, refresh);
}
