"""The demo in Debian's headless Chromium (Playwright): from the demo start page, sign in, open the console,
complete the first-login binding, pay and come back; then the debug console shows those exchanges.

Screenshots land in test-artifacts/browser/ (gitignored)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from idp_bridge.config import load_config, read_raw_config, write_raw_config
from idp_bridge.devtools.demo import DEMO_USERS, DemoSetup, prepare_demo, start_demo
from tests.servers import free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
OPERATOR_PASSWORD = "browser-test-operator-password"



@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoSetup]:
    setup = prepare_demo(tmp_path / "demo", port=free_port(), simulator_port=free_port(), platform_port=free_port())
    assert setup.config.path is not None
    raw = read_raw_config(setup.config.path)
    raw["debug"] = {"enabled": True, "password": OPERATOR_PASSWORD}
    write_raw_config(setup.config.path, raw)
    setup.config = load_config(setup.config.path, environ={})
    start_demo(setup)
    yield setup
    setup.shutdown()


def require_chromium() -> None:
    """CI installs Debian's chromium (scripts/test.sh): without it the acceptance test fails, it is not skipped."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Debian's chromium is missing ({CHROMIUM}): apt-get install -y chromium "
                    "(scripts/test.sh installs it)", pytrace=False)


@pytest.fixture
def page() -> Iterator[Page]:
    require_chromium()
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        p = context.new_page()
        p.set_default_timeout(15_000)
        yield p
        context.close()
        browser.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_demo_journey_in_chromium_and_the_debug_console_shows_it(demo: DemoSetup, page: Page) -> None:
    p = page
    user = DEMO_USERS[0]
    platform, bridge, sim = demo.platform_url, demo.bridge_url, demo.simulator_url

    # the demo start page: the partner platform
    p.goto(platform + "/")
    shot(p, "01-platform-start")
    p.fill("input[name=user_id]", user.user_id)
    p.fill("input[name=password]", user.password)
    p.click("button[type=submit]")
    p.wait_for_selector("#user")
    assert p.text_content("#user") == user.user_id
    shot(p, "02-platform-signed-in")

    # open the console: hand-off -> bridge -> simulator login -> signed AuthnRequest -> bridge -> auto-POST -> ACS
    p.click("#open-console")
    p.wait_for_url(sim + "/authui/bind")  # first login: bind first
    assert "no\nHuawei Cloud account bound yet" in p.content()
    shot(p, "03-huawei-first-login-bind")

    # bind: Huawei's signed notification goes through the browser to the bridge, which lands on the platform
    p.click("button[type=submit]")
    p.wait_for_url(re.compile(re.escape(platform) + r"/huawei/bound.*"))
    assert "linked" in (p.text_content("#title") or "")
    shot(p, "04-platform-account-linked")

    # open the console again: bound now, straight in
    p.click("#open-console")
    p.wait_for_url(sim + "/console")
    console = p.content()
    assert user.email in console and user.user_id in console
    shot(p, "05-huawei-console")

    # pay, then "View order details" comes back to the partner platform through the bridge
    p.click("text=Pay for an order")
    p.wait_for_selector("#order-details")
    shot(p, "06-huawei-paid")
    p.click("#order-details")
    p.wait_for_url(re.compile(re.escape(platform) + r"/orders\?orderId=CS\d+"))
    assert "orderId" in (p.text_content("#params") or "")
    shot(p, "07-platform-back-after-checkout")

    # the debug console shows those exchanges
    p.goto(bridge + "/_bridge/")
    p.fill("input[name=password]", OPERATOR_PASSWORD)
    p.click("#submit")
    p.wait_for_selector("#exchanges")
    rows = p.locator("#exchanges tr.exchange")
    kinds = [rows.nth(i).locator("td").nth(1).text_content() for i in range(rows.count())]
    assert kinds.count("AuthnRequest") == 2 and kinds.count("Response") == 2 and kinds.count("bindRequest") == 1 \
        and kinds.count("return") == 1, kinds
    overview = p.content()
    assert "<th>xUserId</th><td>alice</td>" in overview
    assert "[redacted]" in overview
    assert re.search(r"<b>orderId</b>: <code>CS\d+</code>", overview)
    assert demo.config.entity_id in overview
    shot(p, "08-debug-console")

    p.fill("input[name=user_id]", user.user_id)
    p.click("#test-login")
    p.wait_for_selector("#verdict")
    assert p.text_content("#verdict") == "passed"
    shot(p, "09-debug-test-login")
