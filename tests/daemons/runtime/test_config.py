from __future__ import annotations

import subprocess
import sys

import pytest

from daemons.protocol.errors import ConfigError
from daemons.runtime.config import env_name, load_settings


def test_defaults_file_then_environment(tmp_path):
    conf = tmp_path / "fleet.toml"
    conf.write_text('topic_prefix = "acme"\nbatch_max = 50\n[shadowsync]\nmetrics_port = 0\n')
    s = load_settings("shadowsync", str(conf), environ={"FLEET_BATCH_MAX": "75"})
    assert s.topic_prefix == "acme" and s.batch_max == 75 and s.metrics_port_for("shadowsync") == 0
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert load_settings("otaplanner", str(conf), environ={}).metrics_port_for("otaplanner") == 9102


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FLEET_MQTT_URL": "http://x:1"}, "FLEET_MQTT_URL"),
        ({"FLEET_MQTT_URL": "mqtt://x:notaport"}, "FLEET_MQTT_URL"),
        ({"FLEET_REDIS_URL": "postgres://x"}, "FLEET_REDIS_URL"),
        ({"FLEET_METRICS_PORT": "abc"}, "FLEET_METRICS_PORT"),
        ({"FLEET_TOPIC_PREFIX": "a/+/b"}, "FLEET_TOPIC_PREFIX"),
        ({"FLEET_HEARTBEAT_INTERVAL_S": "0"}, "FLEET_HEARTBEAT_INTERVAL_S"),
        ({"FLEET_OTA_MASTER_KEY": "zz"}, "FLEET_OTA_MASTER_KEY"),
        ({"FLEET_REDIS_CLUSTER": "maybe"}, "FLEET_REDIS_CLUSTER"),
    ],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(ConfigError, match=named):
        load_settings("shadowsync", None, environ=env)


def test_unknown_key_in_file_is_named(tmp_path):
    conf = tmp_path / "fleet.toml"
    conf.write_text("mqtt_uri = 'mqtt://x:1'\n")
    with pytest.raises(ConfigError, match="mqtt_uri"):
        load_settings("shadowsync", str(conf), environ={})


def test_daemon_refuses_to_start_on_bad_config():
    proc = subprocess.run([sys.executable, "-m", "shadowsync"], env={"FLEET_MQTT_URL": "nope"},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "FLEET_MQTT_URL" in proc.stderr


def test_secrets_are_never_in_a_repr() -> None:
    secrets = {"mqtt_password": "pw-secret-1", "s3_secret_key": "s3-secret-2",
               "ota_master_key": "ab" * 16, "debug_link_key": "cd" * 16}
    s = load_settings("shadowsync", environ={env_name(k): v for k, v in secrets.items()})
    views = [s, s.mqtt, s.redis, s.ota, s.artifacts, s.api, s.metrics]
    for text in map(repr, views):
        assert not any(v in text for v in secrets.values()), text
    assert s.mqtt.password == "pw-secret-1" and s.ota.master_key == "ab" * 16  # still readable
    assert s.artifacts.s3_secret_key == "s3-secret-2" and s.api.debug_link_key == "cd" * 16
    assert s.mqtt.url == s.mqtt_url and s.redis.url == s.redis_url and s.metrics.port == s.metrics_port
