"""deploy/grafana: the provisioned dashboard's every query parses and names only metrics a daemon exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.live import exported
from tests.support import ROOT, need

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fleet-overview.json"
# What the dashboard is for: a panel title containing each of these.
REQUIRED = ("Devices online", "Health distribution", "Rollout progress", "Ingest rates", "Shadow sync lag",
            "Daemon batch latency")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "offset", "bool", "le", "inf", "nan"}


def queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """Identifiers of an expression that are neither functions, keywords, labels nor durations."""
    text = re.sub(r'"[^"]*"', "", expr)             # label values
    text = re.sub(r"\{[^}]*\}", "", text)           # matchers
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)          # ranges
    return {w for w in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
            if w not in PROMQL_WORDS}


def test_dashboard_shape():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert dashboard["uid"] and len({p["id"] for p in panels}) == len(panels)
    titles = " | ".join(p["title"] for p in panels)
    assert all(r in titles for r in REQUIRED), titles
    for p in panels:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"


def test_provisioning_files():
    dashboards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "fleet.yaml").read_text())
    assert dashboards["apiVersion"] == 1 and dashboards["providers"][0]["type"] == "file"
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"


def test_every_query_parses(tmp_path: Path):
    # promtool parses PromQL in rule files: each query becomes a recording rule.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_, expr) in enumerate(queries())]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run([need("promtool"), "check", "rules", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_query_names_an_exported_metric(live_metrics):
    names = set().union(*(exported(t) for t in live_metrics.values())) | {"up"}
    for title, expr in queries():
        used = metric_names(expr)
        assert used, f"{title}: {expr} names no metric"
        assert used <= names, f"{title}: {sorted(used - names)} not exported by any daemon"
