"""fleetctl's usage errors (exit 2) need no API: they are decided before any request."""

from __future__ import annotations

import json

import pytest

from daemons.cli.fleetctl import main


@pytest.mark.parametrize("url", ["notaurl", "http://", "ftp://host:21", "127.0.0.1:8080"])
def test_a_bad_api_url_is_a_usage_error(url: str, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETCTL_CONFIG", "/nonexistent")
    monkeypatch.delenv("FLEET_CONFIG", raising=False)
    assert main(["--url", url, "--token", "fleet_x", "devices", "list"]) == 2
    err = capsys.readouterr().err
    assert f"API URL {url!r}" in err and "http(s) URL" in err
    monkeypatch.setenv("FLEET_API_URL", url)  # the same from the environment, without a token, as JSON
    monkeypatch.delenv("FLEET_API_TOKEN", raising=False)
    assert main(["devices", "show", "d1", "--json"]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is False and body["exit"] == 2 and "http(s) URL" in body["error"]
