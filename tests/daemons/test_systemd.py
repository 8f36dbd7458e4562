"""The systemd units: `systemd-analyze verify` clean and `security --offline` exposure at most 2.0."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support import ROOT

UNITS_DIR = ROOT / "daemons" / "systemd"
UNITS = sorted(p.name for p in UNITS_DIR.glob("*.service"))
INSTALLED_BIN = "/opt/fleet/.venv/bin/"
MAX_EXPOSURE = 2.0


@pytest.fixture(scope="module")
def analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return path


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units and their shared drop-in, ExecStart pointed at this venv's console scripts."""
    out = tmp_path_factory.mktemp("systemd")
    shutil.copytree(UNITS_DIR, out, dirs_exist_ok=True)
    venv_bin = f"{Path(sys.executable).parent}/"
    for unit in out.glob("*.service"):
        unit.write_text(unit.read_text().replace(INSTALLED_BIN, venv_bin))
    return out


def scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_daemon_entry_point_has_a_unit():
    daemons = {name for name in scripts() if name.startswith("fleet-")}
    assert {f"{name}.service" for name in daemons} == set(UNITS)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies(analyze, units, unit):
    text = (UNITS_DIR / unit).read_text()
    assert "Type=notify" in text and re.search(r"^WatchdogSec=\d+", text, re.M)
    assert f"ExecStart={INSTALLED_BIN}{unit.removesuffix('.service')}\n" in text
    r = subprocess.run([analyze, "verify", str(units / unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_at_most_2(analyze, units, unit):
    r = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(units / unit)],
                       capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert found, r.stdout + r.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, r.stdout
