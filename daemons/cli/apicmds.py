"""fleetctl's commands on the operator API (docs/API.md), with httpx; `rich` for tables and `watch`.

Every function takes the parsed arguments and an `Api` and returns what `--json` prints (the API's
own body); human output is printed by the function itself when `--json` is absent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from daemons.cli.errors import DENIED, REJECTED, UNREACHABLE, USAGE, CliError

console = Console()


def api_url(url: str) -> str:
    """The API's base URL, checked: an http(s) URL with a host, else CliError(USAGE) (exit 2): a bad
    --url (or FLEET_API_URL, or `url` in the config file) is a usage error, not an unreachable API."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise CliError(USAGE, f"API URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(USAGE, f"API URL {url!r}: not an http(s) URL with a host, e.g. http://127.0.0.1:8080 "
                              "(from --url, FLEET_API_URL or `url` in the config file)")
    return url.rstrip("/")


class Api:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        url = api_url(url)
        if not token:
            raise CliError(DENIED, "no token: pass --token, set FLEET_API_TOKEN or put `token` in the "
                                   "config file")
        self.url = url
        self.http = httpx.Client(base_url=self.url + "/api/v1", timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"})

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(UNREACHABLE, f"{self.url}: {exc}") from None
        if r.status_code == 204:
            return None
        try:
            body = r.json()
        except ValueError:
            body = {"detail": r.text[:200]}
        if r.is_success:
            return body
        detail = body.get("detail", "") if isinstance(body, dict) else ""
        code = DENIED if r.status_code in (401, 403) else UNREACHABLE if r.status_code >= 500 else REJECTED
        raise CliError(code, f"{r.status_code} {body.get('title', '') if isinstance(body, dict) else ''}: "
                             f"{detail}".strip(), status=r.status_code, problem=body)


def _table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)


# -- devices and shadows ----------------------------------------------------------------------------


def devices_list(a: argparse.Namespace, api: Api) -> Any:
    params: dict[str, Any] = {"limit": a.limit, "sort": a.sort}
    for k in ("hw", "fw", "health", "q", "cursor"):
        if getattr(a, k):
            params[k] = getattr(a, k)
    if a.connected is not None:
        params["connected"] = a.connected
    for tag in a.tag or []:
        key, _, value = tag.partition("=")
        params[f"tag.{key}"] = value
    page = api.call("GET", "/devices", params=params)
    if not a.json:
        _table(["id", "hw", "fw", "connected", "health", "score", "tags"],
               [[d["id"], d["hw"], d["fw"], d["connected"], d["health"]["status"], d["health"]["score"],
                 ",".join(f"{k}={v}" for k, v in d["tags"].items())] for d in page["items"]],
               title=f"{page['total']} devices" + (f" (next: --cursor {page['next_cursor']})"
                                                  if page["next_cursor"] else ""))
    return page


def devices_show(a: argparse.Namespace, api: Api) -> Any:
    d = api.call("GET", f"/devices/{a.device}")
    if not a.json:
        console.print(f"[bold]{d['id']}[/] hw {d['hw']} fw {d['fw']} "
                      f"{'online' if d['connected'] else 'offline'}, health {d['health']['status']} "
                      f"({d['health']['score']})")
        for r in d["health"]["reasons"]:
            console.print(f"  {r['code']}: {r.get('detail', '')}")
        console.print_json(data={"shadow": d["shadow"], "ota": d["ota"], "tags": d["tags"]})
    return d


def shadow_get(a: argparse.Namespace, api: Api) -> Any:
    body = api.call("GET", f"/devices/{a.device}/shadow", params={"name": a.name} if a.name else None)
    if not a.json:
        console.print_json(data=body)
    return body


def shadow_set(a: argparse.Namespace, api: Api) -> Any:
    try:
        desired = json.loads(a.desired)
    except ValueError as exc:
        raise CliError(2, f"--desired: not JSON ({exc})") from None
    body: dict[str, Any] = {"state": {"desired": desired}}
    if a.version is not None:
        body["version"] = a.version
    got = api.call("PATCH", f"/devices/{a.device}/shadow", json=body,
                   params={"name": a.name} if a.name else None)
    if not a.json:
        console.print(f"accepted: version {got['version']}")
    return got


def tags_set(a: argparse.Namespace, api: Api) -> Any:
    tags = {}
    for pair in a.tags:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(2, f"{pair!r}: expected key=value")
        tags[key] = value
    got = api.call("PUT", f"/devices/{a.device}/tags", json=tags)
    if not a.json:
        console.print(f"tags of {a.device}: {got}")
    return got


# -- releases and rollouts ------------------------------------------------------------------------


def releases_list(a: argparse.Namespace, api: Api) -> Any:
    page = api.call("GET", "/releases", params={"limit": 1000})
    if not a.json:
        _table(["version", "hw", "size", "secure", "sha256"],
               [[r["version"], ",".join(r["hw"]), r["size"], r["secure_version"], r["sha256"][:16]]
                for r in page["items"]])
    return page


def releases_publish(a: argparse.Namespace, api: Api) -> Any:
    path: Path = a.file
    if not path.is_file():
        raise CliError(2, f"{path}: no such file")
    data: dict[str, Any] = {"version": a.version, "hw": a.hw, "secure_version": str(a.secure_version)}
    if a.notes is not None:
        data["notes"] = a.notes
    with path.open("rb") as f:
        got = api.call("POST", "/releases", data=data, files={"file": (path.name, f)})
    if not a.json:
        console.print(f"release {got['version']} registered: {got['object']} ({got['size']} bytes)")
    return got


def _status_line(s: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items() if v) or "no device yet"
    return (f"{s['rollout_id']} {s['version']}: {s['state']}, stage {s['stage'] + 1}/{len(s['stages'])} "
            f"({s['stages'][s['stage']]}%), {counts}; {s['reason']}")


def rollouts_create(a: argparse.Namespace, api: Api) -> Any:
    body: dict[str, Any] = {"rollout_id": a.rollout, "version": a.version,
                            "stages": [int(x) for x in a.stages.split(",")], "soak_s": a.soak_s,
                            "success_pct": a.success_pct, "max_failure_pct": a.max_failure_pct,
                            "min_devices_for_gate": a.min_devices, "timeout_s": a.timeout_s}
    if a.selector:
        body["selector"] = json.loads(a.selector)
    got = api.call("POST", "/rollouts", json=body)
    if not a.json:
        console.print(_status_line(got))
    return got


def rollouts_show(a: argparse.Namespace, api: Api) -> Any:
    got = api.call("GET", f"/rollouts/{a.rollout}")
    if not a.json:
        console.print(_status_line(got))
        for e in got["events"][-10:]:
            console.print(f"  {time.strftime('%H:%M:%S', time.localtime(e['timestamp']))} {e['event']}: "
                          f"{e.get('reason', '')}")
    return got


def rollouts_act(a: argparse.Namespace, api: Api) -> Any:
    got = api.call("POST", f"/rollouts/{a.rollout}/{a.action}")
    if not a.json:
        console.print(_status_line(got))
    return got


def _watch_table(s: dict[str, Any]) -> Table:
    t = Table(title=f"rollout {s['rollout_id']} → {s['version']}: {s['state']} ({s['reason']})")
    t.add_column("stage")
    t.add_column("share")
    t.add_column("")
    for i, pct in enumerate(s["stages"]):
        mark = "◀ open" if i == s["stage"] and s["state"] in ("running", "paused") else (
            "done" if i < s["stage"] or s["state"] == "completed" else "")
        t.add_row(str(i + 1), f"{pct}%", mark)
    t.add_section()
    for k, v in s["counts"].items():
        t.add_row(k, str(v), "")
    return t


def rollouts_watch(a: argparse.Namespace, api: Api) -> Any:
    """Follow the rollout's event stream (SSE) until it ends, redrawing a live table."""
    last: dict[str, Any] = api.call("GET", f"/rollouts/{a.rollout}")
    try:
        with Live(_watch_table(last), console=console, refresh_per_second=4, transient=a.json) as live, \
                api.http.stream("GET", f"/rollouts/{a.rollout}/events", timeout=None) as r:
            if r.status_code != 200:
                raise CliError(REJECTED, f"{r.status_code}: no event stream for {a.rollout}")
            event = ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "status":
                    last = json.loads(line[5:])
                    live.update(_watch_table(last))
    except httpx.HTTPError as exc:
        raise CliError(UNREACHABLE, f"event stream: {exc}") from None
    return last


# -- health and debug -------------------------------------------------------------------------------


def health_top(a: argparse.Namespace, api: Api) -> Any:
    page = api.call("GET", "/devices", params={"sort": "health_score", "limit": a.limit})
    if not a.json:
        _table(["id", "score", "status", "hw", "fw", "connected"],
               [[d["id"], d["health"]["score"], d["health"]["status"], d["hw"], d["fw"], d["connected"]]
                for d in page["items"]], title="worst health first")
    return page


def debug_open(a: argparse.Namespace, api: Api) -> Any:
    got = api.call("POST", f"/devices/{a.device}/debug", json={"ttl_s": a.ttl})
    if not a.json and a.command != "tail":
        console.print(got["link"])
    return got


def debug_tail(a: argparse.Namespace, api: Api) -> Any:
    """Open a session and print the device's log lines until it expires (or Ctrl-C)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    session = debug_open(a, api)
    link = urlsplit(session["link"])
    scheme = "wss" if link.scheme == "https" else "ws"
    url = f"{scheme}://{link.netloc}{link.path}/ws?{link.query}"
    try:
        with connect(url) as ws:
            while True:
                frame = json.loads(ws.recv())
                if frame.get("type") != "logs":
                    continue
                if a.json:
                    print(json.dumps(frame), flush=True)
                else:
                    for line in frame["lines"]:
                        print(line, flush=True)
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        if code == 4403:
            raise CliError(DENIED, "the debug link was refused") from None
        return {"session_id": session["session_id"], "closed": code}
    except OSError as exc:
        raise CliError(UNREACHABLE, f"{url}: {exc}") from None
