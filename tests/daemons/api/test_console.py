"""The console in Debian's headless Chromium (Playwright with executable_path), on a live stack with
daemons.sim's simulated devices. Screenshots of each page go to var/screenshots/."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.daemons.api.conftest import Stack, stack_redis, start_stack, stop_stack
from tests.support import ROOT, Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SHOTS = ROOT / "var" / "screenshots"
DEVICES = 6
pytestmark = pytest.mark.skipif(not shutil.which("chromium"),
                                reason="Debian chromium not installed (make apt)")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, broker: Server,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(stack_redis(request), broker, tmp_path_factory.mktemp("console"),
                    ("shadowsync", "otaplanner", "healthwatch"), FLEET_HEARTBEAT_INTERVAL_S="1")
    try:
        s.simulate(DEVICES, interval_s=0.5)
        with s.client("admin") as http:
            deadline = time.monotonic() + 20
            while http.get("/api/v1/devices", params={"connected": "true"}).json()["total"] < DEVICES:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            r = http.post("/api/v1/releases", data={"version": "3.0.0", "hw": ["esp32c3", "esp32s3"]},
                          files={"file": ("fw.bin", bytes(range(256)) * 40)})
            assert r.status_code == 201, r.text
        yield s
    finally:
        stop_stack(s)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def login(browser: Any, stack: Stack, role: str) -> Any:
    page = browser.new_page(viewport={"width": 1366, "height": 860})
    page.set_default_timeout(20_000)
    page.goto(stack.url + "/")
    page.fill("#token", stack.tokens[role])
    page.click("#login-form button")
    page.wait_for_selector("#fleet-rows tr")
    return page


def test_operator_console_fleet_device_debug_rollout_health(browser: Any, stack: Stack) -> None:
    page = login(browser, stack, "admin")
    page.wait_for_function(f"document.querySelectorAll('#fleet-rows tr').length === {DEVICES}")
    assert "admin" in page.text_content("#who")
    page.screenshot(path=str(SHOTS / "fleet.png"), full_page=True)
    page.select_option("#f-hw", "esp32s3")
    page.click("#fleet-filters button")
    with stack.client("viewer") as http:
        s3 = [d["id"] for d in http.get("/api/v1/devices", params={"hw": "esp32s3"}).json()["items"]]
    page.wait_for_function(f"document.querySelectorAll('#fleet-rows tr').length === {len(s3)}")
    shown = page.eval_on_selector_all("#fleet-rows tr", "rs => rs.map(r => r.dataset.id)")
    assert shown == s3 and 0 < len(s3) < DEVICES
    page.screenshot(path=str(SHOTS / "fleet-filtered.png"), full_page=True)

    page.click(f"a[href='#/device/{s3[0]}']")
    page.wait_for_selector("#desired-editor")
    page.fill("#desired-editor", '{"led": "green"}')
    page.click("#desired-save")
    page.wait_for_function("document.querySelector('#desired-msg').textContent.startsWith('accepted')")
    # The simulated device gets the delta, reports the value, and the page shows it.
    page.wait_for_function("document.querySelector('#shadow-reported').textContent.includes('green')")
    page.fill("#desired-version", "999")
    page.click("#desired-save")
    page.wait_for_function("document.querySelector('#desired-msg').textContent.startsWith('409')")
    page.click("#debug-open")
    page.wait_for_selector("#debug-log .line")
    assert "app:" in page.text_content("#debug-log")
    page.screenshot(path=str(SHOTS / "device-debug.png"), full_page=True)
    page.click("#debug-stop")
    page.wait_for_function("document.querySelector('#debug-state').textContent.startsWith('ended')")

    page.goto(stack.url + "/#/rollouts")
    page.wait_for_selector("#ro-release option[value='3.0.0']", state="attached")
    page.fill("#ro-id", "console-r1")
    page.fill("#ro-stages", "50,100")
    page.fill("#ro-soak", "3")
    page.fill("#ro-success", "100")
    page.fill("#ro-maxfail", "50")
    page.fill("#ro-min", "1")
    page.fill("#ro-timeout", "60")
    page.click("#ro-create")
    row = "#rollout-rows tr[data-id='console-r1']"
    page.wait_for_selector(row)
    stages, counts = set(), set()
    deadline = time.monotonic() + 60
    while page.text_content(f"{row} .state") != "completed":
        assert time.monotonic() < deadline, "rollout did not complete"
        stages.add(page.text_content(f"{row} td:nth-child(4)"))
        counts.add(page.text_content(f"{row} .counts"))
        page.wait_for_timeout(300)
    assert "1 of 2 (50%)" in stages and len(counts) >= 2, (stages, counts)
    page.screenshot(path=str(SHOTS / "rollouts.png"), full_page=True)

    page.goto(stack.url + "/#/health")
    page.wait_for_selector("#health-counts .stat")
    page.wait_for_selector("#cohort-rows tr")
    page.screenshot(path=str(SHOTS / "health.png"), full_page=True)
    page.close()


def test_viewer_sees_no_write_buttons_and_the_api_refuses_its_writes(browser: Any, stack: Stack) -> None:
    page = login(browser, stack, "viewer")
    page.goto(stack.url + "/#/device/sim-00001")
    page.wait_for_selector("#shadow-desired")
    for selector in ("#desired-save", "#desired-editor", "#tags-save", "#debug-open"):
        assert page.query_selector(selector) is None, selector
    page.screenshot(path=str(SHOTS / "device-viewer.png"), full_page=True)
    page.goto(stack.url + "/#/rollouts")
    page.wait_for_selector("#rollout-rows tr")
    assert page.query_selector("#rollout-form") is None
    assert page.query_selector("[data-action]") is None
    status = page.evaluate("""async () => (await fetch('/api/v1/devices/sim-00001/shadow', {
        method: 'PATCH', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({state: {desired: {x: 1}}})})).status""")
    assert status == 403
    page.click("#logout")
    page.wait_for_selector("#login-form")
    assert page.evaluate("async () => (await fetch('/api/v1/devices')).status") == 401
    page.close()
