// The console's shell: login with a token (an HttpOnly session cookie), a hash router, logout.
import { api, state, stopTimers, h } from "/static/api.js";
import { fleetPage } from "/static/fleet.js";
import { devicePage } from "/static/device.js";
import { rolloutsPage } from "/static/rollouts.js";
import { healthPage } from "/static/health.js";

const view = document.getElementById("view");
const login = document.getElementById("login");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

function showLogin() {
  state.me = null;
  stopTimers();
  view.replaceChildren();
  nav.hidden = true;
  who.replaceChildren();
  login.hidden = false;
  document.getElementById("token").focus();
}

async function logout() {
  await api("DELETE", "/session").catch(() => null);
  showLogin();
}

function route() {
  if (!state.me) return;
  stopTimers();
  const [, page, arg] = (location.hash || "#/fleet").split("/");
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.page === page);
  view.replaceChildren();
  const pages = { fleet: fleetPage, device: devicePage, rollouts: rolloutsPage, health: healthPage };
  (pages[page] || fleetPage)(view, decodeURIComponent(arg || ""));
}

async function start() {
  try {
    state.me = await api("GET", "/session");
  } catch {
    showLogin();
    return;
  }
  login.hidden = true;
  nav.hidden = false;
  who.replaceChildren(`${state.me.name} (${state.me.role})`,
                      h("button", { class: "secondary", id: "logout", onclick: logout }, "Log out"));
  route();
}

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("login-error");
  err.textContent = "";
  try {
    await api("POST", "/session", { token: document.getElementById("token").value.trim() });
    document.getElementById("token").value = "";
    await start();
  } catch (e) {
    err.textContent = e.status === 401 ? "Unknown, expired or revoked token." : e.message;
  }
});
window.addEventListener("hashchange", route);
window.addEventListener("fleet:logout", showLogin);
start();
