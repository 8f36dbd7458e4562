"""Settings: one optional TOML file, then FLEET_* environment variables, which win.

Every key of the TOML file is a field name of `Settings` (e.g. `mqtt_url`); the matching
environment variable is `FLEET_` + the upper-cased name (e.g. `FLEET_MQTT_URL`).
A `[<daemon>]` table in the file overrides the top level for that daemon only.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from daemons.protocol.errors import ConfigError

# Topic prefixes become MQTT topic levels: no wildcards, no empty levels.
_PREFIX_FORBIDDEN = set("+#\x00")

DEFAULT_METRICS_PORTS = {
    "shadowsync": 9101,
    "otaplanner": 9102,
    "healthwatch": 9103,
    "api": 0,  # fleet-api serves /metrics on its own HTTP port
}


@dataclass(frozen=True)
class Settings:
    """Configuration shared by every daemon (PROTOCOL §7)."""

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    # "auto" tries MQTT 5 and falls back to 3.1.1; "5" or "3.1.1" forces one.
    mqtt_protocol: str = "auto"
    # "auto" uses $share/<daemon>/ when the broker says it offers shared subscriptions (MQTT 5).
    shared_subscriptions: str = "auto"
    mqtt_client_id: str | None = None
    session_expiry_s: int = 3600
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    topic_prefix: str = "fleet"
    ops_prefix: str = "fleetops"
    metrics_port: int = -1  # -1: the daemon's default port
    heartbeat_interval_s: int = 60
    batch_max: int = 500
    log_level: str = "info"
    artifact_store: str = "local:./var/artifacts"
    # 8081: the operator API (fleet-api) has 8080.
    artifact_http_port: int = 8081
    artifact_public_url: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    ota_master_key: str | None = None
    ota_ecdsa_key: str | None = None
    ota_kid: str = "k1"
    debug_link_key: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # The API's address as browsers see it (debug links, console), when not http://api_host:api_port.
    api_public_url: str | None = None

    def metrics_port_for(self, daemon: str) -> int:
        if self.metrics_port >= 0:
            return self.metrics_port
        return DEFAULT_METRICS_PORTS.get(daemon, 0)


def env_name(field_name: str) -> str:
    return "FLEET_" + field_name.upper()


def _coerce(name: str, source: str, raw: Any, default: Any, annotation: str) -> Any:
    where = f"{source} ({name})"
    if raw is None:
        return None
    if "bool" in annotation:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}: expected a boolean, got {raw!r}")
    if "int" in annotation:
        if isinstance(raw, bool):
            raise ConfigError(f"{where}: expected an integer, got {raw!r}")
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {raw!r}") from None
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: expected a string, got {raw!r}")
    return raw


def _validate(s: Settings) -> None:
    def bad(field_name: str, why: str) -> ConfigError:
        return ConfigError(f"{env_name(field_name)} ({field_name}): {why}")

    url = urlparse(s.mqtt_url)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise bad("mqtt_url", f"expected mqtt://host:port or mqtts://host:port, got {s.mqtt_url!r}")
    try:
        url.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise bad("mqtt_url", f"bad port in {s.mqtt_url!r}") from None
    if urlparse(s.redis_url).scheme not in ("redis", "rediss", "unix"):
        raise bad("redis_url", f"expected redis://host:port/db, got {s.redis_url!r}")
    if s.mqtt_protocol not in ("auto", "5", "3.1.1"):
        raise bad("mqtt_protocol", f"expected auto, 5 or 3.1.1, got {s.mqtt_protocol!r}")
    if s.shared_subscriptions not in ("auto", "on", "off"):
        raise bad("shared_subscriptions", f"expected auto, on or off, got {s.shared_subscriptions!r}")
    for name in ("topic_prefix", "ops_prefix"):
        value = getattr(s, name)
        if not value or value.startswith("/") or value.endswith("/") or _PREFIX_FORBIDDEN & set(value):
            raise bad(name, f"not a usable topic prefix: {value!r}")
    if s.topic_prefix == s.ops_prefix:
        raise bad("ops_prefix", "must differ from the device topic prefix")
    for name in ("heartbeat_interval_s", "batch_max", "session_expiry_s"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be positive")
    for name in ("metrics_port", "artifact_http_port", "api_port"):
        if not -1 <= getattr(s, name) <= 65535:
            raise bad(name, "not a port number")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise bad("log_level", f"expected debug, info, warning or error, got {s.log_level!r}")
    if not (s.artifact_store.startswith("local:") or s.artifact_store.startswith("s3://")):
        raise bad("artifact_store", f"expected local:/dir or s3://bucket/prefix, got {s.artifact_store!r}")
    if s.ota_master_key is not None:
        try:
            if len(bytes.fromhex(s.ota_master_key)) < 16:
                raise bad("ota_master_key", "must be at least 16 bytes of hex")
        except ValueError:
            raise bad("ota_master_key", "not hex") from None


def load_settings(
    daemon: str,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the TOML file (if any) then the environment; raise ConfigError naming the bad key."""
    env = os.environ if environ is None else environ
    path = config_path or env.get("FLEET_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"FLEET_CONFIG: no such file {path!r}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"FLEET_CONFIG: {path}: {exc}") from None
        section = data.pop(daemon, {})
        for other in DEFAULT_METRICS_PORTS:
            data.pop(other, None)
        file_values = {**data, **(section if isinstance(section, dict) else {})}

    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(file_values) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}")

    values: dict[str, Any] = {}
    for name, f in known.items():
        annotation = str(f.type)
        if name in file_values:
            values[name] = _coerce(name, str(path), file_values[name], f.default, annotation)
        if env_name(name) in env:
            values[name] = _coerce(name, env_name(name), env[env_name(name)], f.default, annotation)
    settings = dataclasses.replace(Settings(), **values)
    _validate(settings)
    return settings
