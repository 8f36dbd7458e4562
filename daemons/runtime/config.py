"""Settings: one optional TOML file, then FLEET_* environment variables, which win.

Every key of the TOML file is a field name of `Settings` (e.g. `mqtt_url`); the matching
environment variable is `FLEET_` + the upper-cased name (e.g. `FLEET_MQTT_URL`).
A `[<daemon>]` table in the file overrides the top level for that daemon only.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from daemons.protocol.errors import ConfigError, env_name
from daemons.protocol.keys import setting_key

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
    """Configuration shared by every daemon (PROTOCOL §7).

    Flat fields (one per TOML key / FLEET_* variable), with read-only views by section: `mqtt`,
    `redis`, `ota`, `artifacts`, `api`, `metrics`. Secrets (passwords, keys) are left out of
    every repr, so a logged Settings never shows them.
    """

    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    # "auto" tries MQTT 5 and falls back to 3.1.1; "5" or "3.1.1" forces one.
    mqtt_protocol: str = "auto"
    # "auto" uses $share/<daemon>/ when the broker says it offers shared subscriptions (MQTT 5);
    # "on" always; "off" (the default) never. Off by default because mosquitto 2.0 does not keep a
    # session's shared subscriptions across its own restart (persist__subs_save walks plain
    # subscribers only): what devices publish before the daemon subscribes again would be lost. A
    # plain subscription lives in the persistent session and loses nothing. Replicas: either
    # numbered (replica_index/count, any broker) or behind $share on a broker that persists them.
    shared_subscriptions: str = "off"
    mqtt_client_id: str | None = None
    # Replicas of one daemon on a broker without shared subscriptions (daemons.runtime.replicas):
    # replica `replica_index` of `replica_count` handles the devices whose id hashes to its index.
    replica_index: int = 0
    replica_count: int = 1
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
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_region: str = "us-east-1"
    ota_master_key: str | None = field(default=None, repr=False)
    ota_ecdsa_key: str | None = None
    ota_kid: str = "k1"
    debug_link_key: str | None = field(default=None, repr=False)
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # The API's address as browsers see it (debug links, console), when not http://api_host:api_port.
    api_public_url: str | None = None
    # Hex fleet secret (>= 16 bytes): every device's broker password derives from it
    # (daemons.protocol.keys.device_password), for the amqtt plugin, the simulator and `fleetctl creds`.
    secret: str | None = field(default=None, repr=False)
    # The embedded broker (daemons.broker): accounts of daemons and operators (mosquitto password
    # file format) and the ACL (mosquitto acl_file format; default: the shipped mosquitto/acl.conf).
    broker_passwd_file: str | None = None
    broker_acl_file: str | None = None

    def client_id_for(self, daemon: str) -> str:
        """The daemon's MQTT client id (also its replica id in Redis claims and leases):
        FLEET_MQTT_CLIENT_ID, else `<daemon>-<host>`, plus `-<index>` when replicas are numbered,
        so numbered replicas on one host never take each other's broker session."""
        if self.mqtt_client_id:
            return self.mqtt_client_id
        base = f"{daemon}-{socket.gethostname()}"
        return f"{base}-{self.replica_index}" if self.replica_count > 1 else base

    def metrics_port_for(self, daemon: str) -> int:
        if self.metrics_port >= 0:
            return self.metrics_port
        return DEFAULT_METRICS_PORTS.get(daemon, 0)

    @property
    def mqtt(self) -> MqttSettings:
        return MqttSettings(self.mqtt_url, self.mqtt_username, self.mqtt_password, self.mqtt_protocol,
                            self.shared_subscriptions, self.mqtt_client_id, self.session_expiry_s,
                            self.batch_max, self.topic_prefix, self.ops_prefix)

    @property
    def redis(self) -> RedisSettings:
        return RedisSettings(self.redis_url, self.redis_cluster)

    @property
    def ota(self) -> OtaSettings:
        return OtaSettings(self.ota_master_key, self.ota_ecdsa_key, self.ota_kid)

    @property
    def artifacts(self) -> ArtifactSettings:
        return ArtifactSettings(self.artifact_store, self.artifact_http_port, self.artifact_public_url,
                                self.s3_endpoint, self.s3_access_key, self.s3_secret_key, self.s3_region)

    @property
    def api(self) -> ApiSettings:
        return ApiSettings(self.api_host, self.api_port, self.api_public_url, self.debug_link_key)

    @property
    def metrics(self) -> MetricsSettings:
        return MetricsSettings(self.metrics_port)


# Read-only views of Settings by section (the flat fields stay the configuration's source).
@dataclass(frozen=True)
class MqttSettings:
    url: str
    username: str | None
    password: str | None = field(repr=False)
    protocol: str
    shared_subscriptions: str
    client_id: str | None
    session_expiry_s: int
    batch_max: int
    topic_prefix: str
    ops_prefix: str


@dataclass(frozen=True)
class RedisSettings:
    url: str
    cluster: bool


@dataclass(frozen=True)
class OtaSettings:
    master_key: str | None = field(repr=False)
    ecdsa_key: str | None  # a file path
    kid: str


@dataclass(frozen=True)
class ArtifactSettings:
    store: str
    http_port: int
    public_url: str | None
    s3_endpoint: str | None
    s3_access_key: str | None
    s3_secret_key: str | None = field(repr=False)
    s3_region: str


@dataclass(frozen=True)
class ApiSettings:
    host: str
    port: int
    public_url: str | None
    debug_link_key: str | None = field(repr=False)


@dataclass(frozen=True)
class MetricsSettings:
    port: int  # -1: the daemon's default port (Settings.metrics_port_for)


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
    bad = ConfigError.of

    url = urlparse(s.mqtt_url)
    if url.username is not None or url.password is not None:
        # Not echoed: the URL holds a secret.
        raise bad("mqtt_url", "no credentials in the URL: use FLEET_MQTT_USERNAME and FLEET_MQTT_PASSWORD")
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
    if s.shared_subscriptions == "on":
        for name in ("topic_prefix", "ops_prefix"):
            if getattr(s, name).startswith("$"):
                # mosquitto 2.0 grants $share/g/$x/... and never delivers on it (runtime/prefixes.py).
                raise bad("shared_subscriptions", f"'on' cannot serve {env_name(name)}="
                          f"{getattr(s, name)!r}: shared subscriptions do not carry '$' topics; "
                          "use auto (plain subscriptions for '$' topics) or off")
    if s.topic_prefix == s.ops_prefix:
        raise bad("ops_prefix", "must differ from the device topic prefix")
    for name in ("heartbeat_interval_s", "batch_max", "session_expiry_s"):
        if getattr(s, name) <= 0:
            raise bad(name, "must be positive")
    if s.replica_count < 1:
        raise bad("replica_count", "must be positive")
    if not 0 <= s.replica_index < s.replica_count:
        raise bad("replica_index", f"expected 0 to {s.replica_count - 1} (replica_count - 1), "
                  f"got {s.replica_index}")
    for name in ("metrics_port", "artifact_http_port", "api_port"):
        if not -1 <= getattr(s, name) <= 65535:
            raise bad(name, "not a port number")
    if s.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise bad("log_level", f"expected debug, info, warning or error, got {s.log_level!r}")
    if not (s.artifact_store.startswith("local:") or s.artifact_store.startswith("s3://")):
        raise bad("artifact_store", f"expected local:/dir or s3://bucket/prefix, got {s.artifact_store!r}")
    setting_key("ota_master_key", s.ota_master_key)
    setting_key("secret", s.secret)


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
