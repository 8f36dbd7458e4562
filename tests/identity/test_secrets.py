"""Secrets (fleet secret, account passwords, keys) never appear in a repr or a log line."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from daemons.cli.localstack import start_amqtt
from daemons.protocol.errors import ConfigError
from daemons.runtime.config import Settings, load_settings
from tests.identity.matrix import Client, Identity
from tests.support import ROOT, Daemon, env_for


def test_settings_repr_has_no_secret() -> None:
    values = {name: secrets.token_hex(16) for name in
              ("secret", "mqtt_password", "s3_secret_key", "ota_master_key", "debug_link_key")}
    text = repr(Settings(**values)) + str(Settings(**values))
    for name, value in values.items():
        assert value not in text, name


@pytest.mark.parametrize("env", [{"FLEET_SECRET": "zz" + "ab" * 20}, {"FLEET_SECRET": "abcd1234"},
                                 {"FLEET_MQTT_URL": "mqtt://dev:hunter2hunter2@127.0.0.1:1883"}])
def test_configuration_errors_do_not_echo_secrets(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings("shadowsync", environ=env)
    assert next(iter(env.values())) not in str(err.value)
    assert "hunter2" not in str(err.value)


def test_daemon_and_broker_logs_hold_no_password(tmp_path: Path, redis, redis_server, prefixes) -> None:
    p, o = prefixes
    amqtt = start_amqtt(tmp_path / "amqtt", env={"FLEET_TOPIC_PREFIX": p, "FLEET_OPS_PREFIX": o})
    password = amqtt.accounts["shadowsync"]
    try:
        env = env_for(redis_server, amqtt, p, o, FLEET_MQTT_USERNAME="shadowsync",
                      FLEET_MQTT_PASSWORD=password, FLEET_MQTT_CLIENT_ID="ss-secrets",
                      FLEET_LOG_LEVEL="debug")
        # 3.1.1 at once for the good login (no 3 s wait for an MQTT 5 CONNACK amqtt never sends); the
        # wrong password below goes through "auto", both attempts, so both kinds of log lines are seen.
        sync = Daemon("shadowsync", {**env, "FLEET_MQTT_PROTOCOL": "3.1.1"}).start()
        sync.terminate()
        # A wrong password: the daemon stops with an error that names the refusal, not the password.
        wrong = "wrong-" + secrets.token_hex(8)
        bad = subprocess.run([sys.executable, "-m", "shadowsync"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, **env, "FLEET_MQTT_PASSWORD": wrong}, timeout=60)
        assert bad.returncode == 1 and "refused" in bad.stderr, bad.stderr[-300:]
        tried = Client(Identity("op", amqtt.port, "operator", "guess-" + secrets.token_hex(8)))
        assert tried.try_connect() != "ok"
        text = "\n".join(sync.lines) + bad.stderr
        assert password not in text and wrong not in text and amqtt.secret not in text
    finally:
        amqtt.stop()
    broker_log = (amqtt.workdir / "broker.log").read_text()
    assert "refused 'operator'" in broker_log
    assert "guess-" not in broker_log and password not in broker_log and amqtt.secret not in broker_log
