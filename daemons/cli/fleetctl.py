"""`fleetctl`: the operator's command line, on the operator API (docs/API.md).

Where the API is: --url, else FLEET_API_URL, else `url` in the config file, else the settings'
API address. The token: --token, else FLEET_API_TOKEN, else `token` in the config file. The config
file is --ctl-config, else $FLEETCTL_CONFIG, else ~/.config/fleetctl.toml (TOML: url, token).
`pki init|issue|revoke` and `creds` work on local files and keys (daemons.cli.pki).
`token create|list|revoke` go to Redis directly (FLEET_REDIS_URL or the settings file), so the first
admin token can be made before any exists. Every read takes --json (the API's body on stdout).

Exit codes: 0 done; 2 usage or configuration error; 3 refused by the API or a daemon (400, 404,
409, 413, 422; the problem's detail on stderr); 4 unreachable or unavailable (connection error,
timeout, 5xx); 5 no token, or the token lacks the role (401, 403).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from daemons.cli import apicmds, pki
from daemons.cli.errors import OK, USAGE, CliError
from daemons.protocol.errors import ConfigError
from daemons.runtime.config import Settings, load_settings

DEFAULT_CONFIG = Path.home() / ".config" / "fleetctl.toml"


class _UsageParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would sys.exit(2) itself; keep control
        raise CliError(USAGE, f"{self.prog}: {message}")


def _cmd(sub: Any, name: str, fn: Any, help: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help)
    p.set_defaults(fn=fn)
    p.add_argument("--json", action="store_true", help="the API's answer as JSON on stdout")
    return p


def parser() -> argparse.ArgumentParser:
    p = _UsageParser(prog="fleetctl", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="daemons' TOML settings (else FLEET_CONFIG, then FLEET_* variables)")
    p.add_argument("--ctl-config", help="fleetctl's own TOML file with url and token")
    p.add_argument("--url", help="the API's base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--token", help="an API token (fleet_...)")
    groups = p.add_subparsers(dest="group", required=True)

    from daemons.cli import publish
    release = groups.add_parser("release", help="publish a firmware image straight to the store and planner")
    rsub = release.add_subparsers(dest="action", required=True)
    pub = _cmd(rsub, "publish", publish.publish, "upload a firmware image and register it (no API)")
    pub.set_defaults(direct=True)
    pub.add_argument("file", type=Path)
    pub.add_argument("--version", required=True)
    pub.add_argument("--hw", action="append", required=True, help="hardware it runs on (repeatable)")
    pub.add_argument("--secure-version", type=int, default=0)
    pub.add_argument("--notes")
    pub.add_argument("--object", help="object name in the store (default: firmware/<version>/<file name>)")
    pub.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the planner")

    dev = groups.add_parser("devices", help="the fleet").add_subparsers(dest="action", required=True)
    ls = _cmd(dev, "list", apicmds.devices_list, "list devices (filters AND together)")
    for name in ("hw", "fw", "health", "q", "cursor"):
        ls.add_argument(f"--{name}")
    ls.add_argument("--tag", action="append", help="key=value (repeatable)")
    ls.add_argument("--connected", choices=("true", "false"))
    ls.add_argument("--sort", default="id")
    ls.add_argument("--limit", type=int, default=100)
    _cmd(dev, "show", apicmds.devices_show, "one device").add_argument("device")

    sh = groups.add_parser("shadow", help="device shadows").add_subparsers(dest="action", required=True)
    get = _cmd(sh, "get", apicmds.shadow_get, "a shadow document")
    get.add_argument("device")
    get.add_argument("--name", help="a named shadow")
    put = _cmd(sh, "set", apicmds.shadow_set, "merge a desired patch")
    put.add_argument("device")
    put.add_argument("--desired", required=True, help='JSON, e.g. \'{"led": "blue"}\'')
    put.add_argument("--version", type=int, help="refused (exit 3, 409) unless it is the current version")
    put.add_argument("--name", help="a named shadow")

    tags = groups.add_parser("tags", help="device tags").add_subparsers(dest="action", required=True)
    ts = _cmd(tags, "set", apicmds.tags_set, "replace a device's tags")
    ts.add_argument("device")
    ts.add_argument("tags", nargs="*", help="key=value ...")

    rel = groups.add_parser("releases", help="firmware releases").add_subparsers(dest="action", required=True)
    _cmd(rel, "list", apicmds.releases_list, "registered releases")
    rp = _cmd(rel, "publish", apicmds.releases_publish, "upload and register through the API (admin)")
    rp.add_argument("file", type=Path)
    rp.add_argument("--version", required=True)
    rp.add_argument("--hw", action="append", required=True)
    rp.add_argument("--secure-version", type=int, default=0)
    rp.add_argument("--notes")

    ro = groups.add_parser("rollouts", help="staged rollouts").add_subparsers(dest="action", required=True)
    cr = _cmd(ro, "create", apicmds.rollouts_create, "start a rollout of a release")
    cr.add_argument("rollout")
    cr.add_argument("--version", required=True)
    cr.add_argument("--stages", default="1,5,20,100", help="percentages, comma separated")
    cr.add_argument("--soak-s", type=int, default=600)
    cr.add_argument("--success-pct", type=float, default=95)
    cr.add_argument("--max-failure-pct", type=float, default=2)
    cr.add_argument("--min-devices", type=int, default=20)
    cr.add_argument("--timeout-s", type=int, default=1800)
    cr.add_argument("--selector", help="PROTOCOL §5 selector as JSON")
    _cmd(ro, "show", apicmds.rollouts_show, "status and recent events").add_argument("rollout")
    _cmd(ro, "watch", apicmds.rollouts_watch, "a live view until the rollout ends").add_argument("rollout")
    for action in ("pause", "resume", "abort", "advance", "rollback"):
        c = _cmd(ro, action, apicmds.rollouts_act, f"{action} a rollout")
        c.add_argument("rollout")
        c.set_defaults(action=action)

    health = groups.add_parser("health", help="fleet health").add_subparsers(dest="action", required=True)
    _cmd(health, "top", apicmds.health_top, "the worst devices").add_argument("--limit", type=int, default=20)

    dbg = groups.add_parser("debug", help="remote debugging").add_subparsers(dest="command", required=True)
    for name, fn, what in (("open", apicmds.debug_open, "open a session and print its link"),
                           ("tail", apicmds.debug_tail, "open a session and stream the device's logs")):
        c = _cmd(dbg, name, fn, what)
        c.add_argument("device")
        c.add_argument("--ttl", type=int, default=600, help="seconds (at most 3600)")

    tok = groups.add_parser("token", help="API tokens (Redis, no API needed)").add_subparsers(
        dest="action", required=True)
    tc = _cmd(tok, "create", token_create, "make a token (shown once)")
    tc.set_defaults(direct=True)
    tc.add_argument("--role", choices=("viewer", "operator", "admin"), required=True)
    tc.add_argument("--name", required=True)
    tc.add_argument("--ttl-days", type=float)
    _cmd(tok, "list", token_list, "tokens (never the secrets)").set_defaults(direct=True)
    rv = _cmd(tok, "revoke", token_revoke, "revoke a token by id")
    rv.set_defaults(direct=True)
    rv.add_argument("id")
    pki.add_commands(groups)  # pki init|issue|revoke, creds: local files and keys, no API
    return p


def _tokens(settings: Settings) -> Any:
    from daemons.api.auth import TokenStore
    from daemons.runtime.redisclient import connect_redis

    return TokenStore(connect_redis(settings))


def _redis_call(fn: Any) -> Any:
    import redis

    try:
        return fn()
    except redis.exceptions.ConnectionError as exc:
        raise CliError(4, f"redis: {exc}") from None


def token_create(a: argparse.Namespace, settings: Settings) -> Any:
    from daemons.api.auth import TokenError

    try:
        made = _redis_call(lambda: _tokens(settings).create(a.name, a.role, a.ttl_days))
    except TokenError as exc:
        raise CliError(USAGE, str(exc)) from None
    if not a.json:
        print(made["token"])
        print(f"(id {made['id']}, role {made['role']}; shown once, stored only as a hash)", file=sys.stderr)
    return {k: made[k] for k in ("token", "id", "name", "role", "expires_at")}


def token_list(a: argparse.Namespace, settings: Settings) -> Any:
    rows = _redis_call(lambda: _tokens(settings).list())
    if not a.json:
        apicmds._table(["id", "name", "role", "created", "expires", "revoked"],
                       [[r["id"], r["name"], r["role"], r["created_at"], r["expires_at"], r["revoked_at"]]
                        for r in rows])
    return {"items": rows}


def token_revoke(a: argparse.Namespace, settings: Settings) -> Any:
    from daemons.api.auth import TokenError

    try:
        record = _redis_call(lambda: _tokens(settings).revoke(a.id))
    except TokenError as exc:
        raise CliError(3, str(exc)) from None
    if not a.json:
        print(f"revoked {record['id']} ({record['name']})")
    return record


def _ctl_config(a: argparse.Namespace) -> dict[str, Any]:
    path = Path(a.ctl_config or os.environ.get("FLEETCTL_CONFIG") or DEFAULT_CONFIG)
    if not path.exists():
        if a.ctl_config:
            raise CliError(USAGE, f"{path}: no such file")
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(USAGE, f"{path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        args = parser().parse_args(argv)
        try:
            settings = load_settings("fleetctl", args.config)
        except ConfigError as exc:
            raise CliError(USAGE, f"configuration: {exc}") from None
        if hasattr(args, "handler"):  # commands registered by pki.add_commands
            return int(args.handler(args, settings))
        if getattr(args, "direct", False):
            result = args.fn(args, settings)
        else:
            from daemons.api.app import public_url

            ctl = _ctl_config(args)
            url = args.url or os.environ.get("FLEET_API_URL") or ctl.get("url") or public_url(settings)
            token = args.token or os.environ.get("FLEET_API_TOKEN") or ctl.get("token")
            result = args.fn(args, apicmds.Api(url, token))
    except CliError as exc:
        if args is not None and getattr(args, "json", False):
            print(json.dumps({"ok": False, "exit": exc.code, "error": exc.message, **exc.extra}))
        else:
            print(f"fleetctl: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return OK
    if args.json:
        if args.fn.__name__ == "publish":  # the release publish answer keeps its documented shape
            print(json.dumps({"ok": True, "exit": OK, **result}))
        else:
            print(json.dumps(result))
    elif args.fn.__name__ == "publish":
        r = result["release"]
        print(f"release {r['version']} registered: {r['object']} ({r['size']} bytes, sha256 {r['sha256']})")
    return OK


if __name__ == "__main__":
    sys.exit(main())
