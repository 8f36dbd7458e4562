"""deploy/prometheus: promtool accepts the config, the rules and every daemon's live /metrics;
each alert has a unit test; every metric a rule names is exported by a daemon."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.live import exported
from tests.support import ROOT, need

PROM = ROOT / "deploy" / "prometheus"
DAEMONS = ("shadowsync", "otaplanner", "healthwatch")
DOMAIN = {
    "shadowsync": ["fleet_devices_known", "fleet_devices_online", "fleet_shadow_delta_backlog",
                   "fleet_shadow_sync_lag_seconds"],
    "otaplanner": ["fleet_ota_rollouts", "fleet_ota_rollout_devices"],
    "healthwatch": ["fleet_health_devices", "fleet_heartbeat_lag_seconds_bucket"],
}
SHARED = ["fleet_redis_rtt_seconds_bucket", "fleet_broker_rtt_seconds_bucket", "fleet_mqtt_connected"]


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("promtool"), *args], input=stdin, capture_output=True, text=True,
                          cwd=PROM, timeout=120)


def test_config_and_rules_are_valid():
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    r = promtool("check", "rules", "fleet.rules.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_has_a_passing_unit_test():
    rules = yaml.safe_load((PROM / "fleet.rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROM / "fleet.rules.test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == tested, f"alerts without a firing test: {alerts - tested}"
    r = promtool("test", "rules", "fleet.rules.test.yml")
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("daemon", DAEMONS)
def test_live_metrics_pass_promtool(live_metrics, daemon):
    text = live_metrics[daemon]
    r = promtool("check", "metrics", stdin=text)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr
    names = exported(text)
    missing = [m for m in DOMAIN[daemon] + SHARED if m not in names]
    assert not missing, f"{daemon} does not export {missing}"
    assert "m-1" not in text, "a device id in a label"


def test_rules_name_only_exported_metrics(live_metrics):
    names = set().union(*(exported(t) for t in live_metrics.values()))
    rules = yaml.safe_load((PROM / "fleet.rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in re.findall(r"\b(fleet_[a-z_]+)", rule["expr"]):
                assert name in names, f"{rule.get('alert') or rule.get('record')}: {name} is not exported"
            for name in re.findall(r"\b(fleet:[a-z_:0-9]+)", rule["expr"]):
                assert name in recorded
