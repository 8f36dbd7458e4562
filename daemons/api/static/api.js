// What every page of the console shares: the API client (session cookie), roles, small DOM helpers.
// The console uses only the HTTP API of docs/API.md; errors arrive as RFC 9457 problem details.

export const state = { me: null, timers: [] };

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? `${status}: ${problem.detail}` : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch("/api/v1" + path, init);
  if (r.status === 204) return null;
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    if (r.status === 401 && path !== "/session") window.dispatchEvent(new Event("fleet:logout"));
    throw new ApiError(r.status, data);
  }
  return data;
}

const ORDER = ["viewer", "operator", "admin"];
export const can = (role) => state.me && ORDER.indexOf(state.me.role) >= ORDER.indexOf(role);

// h("td", {class: "id"}, "text", child...): elements from data only (textContent, never innerHTML).
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const pill = (text, cls) => h("span", { class: `pill ${cls || text || "none"}` }, text || "—");
export const ago = (t) => {
  if (!t) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
};
export const json = (v) => h("pre", { class: "json" }, JSON.stringify(v ?? {}, null, 2));

// Run fn now and every ms while the page is shown; stopped when the page changes.
export function every(ms, fn) {
  fn();
  state.timers.push(setInterval(fn, ms));
}

export function stopTimers() {
  state.timers.forEach(clearInterval);
  state.timers = [];
}

export function message(el, text, ok) {
  el.textContent = text;
  el.className = ok ? "okmsg" : "error";
}
