"""The demo in Debian's headless Chromium (Playwright), once with ``Accept-Language: zh-CN`` and once with ``en``:
from the demo shop, sign in, open the console, complete the first-login binding, pay and come back; the error
pages a customer can reach; the operator console (its search, its layout at 1280 px, the test login).

Every bridge and shop page is checked for the other language's catalogue strings (a wrong-language string
fails the test). Screenshots land in test-artifacts/browser/<locale>/ (gitignored)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.support import Translations
from playwright.sync_api import Page, sync_playwright

from idp_bridge.config import load_config, read_raw_config, write_raw_config
from idp_bridge.devtools.demo import DEMO_USERS, DemoSetup, prepare_demo, start_demo
from idp_bridge.web.i18n import TRANSLATIONS
from tests.i18n_strings import foreign_strings_in
from tests.servers import free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "browser"
OPERATOR_PASSWORD = "browser-test-operator-password"
WIDTH = 1280
ZH = Translations.load(str(TRANSLATIONS), ["zh_Hans_CN"])


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
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False).stdout
    if not fonts.strip():
        pytest.fail("no Chinese font: the zh-CN screenshots would show boxes; apt-get install -y fonts-wqy-microhei "
                    "(scripts/test.sh installs it)", pytrace=False)


class Browser:
    """One Chromium page in one language; every bridge/shop page it shows is language-checked and saved."""

    def __init__(self, page: Page, locale: str, shots: Path) -> None:
        self.page, self.locale, self.shots = page, locale, shots
        self.checked: list[str] = []

    def t(self, msgid: str) -> str:
        return ZH.gettext(msgid) if self.locale == "zh-CN" else msgid

    def shot(self, name: str, *, check_language: bool = True) -> None:
        p = self.page
        p.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        if not check_language:  # the Huawei IAM simulator: a developer tool, English only
            return
        assert p.get_attribute("html", "lang") == self.locale, (name, p.url)
        foreign = foreign_strings_in(p.inner_text("body"), self.locale)
        assert not foreign, f"{name} ({p.url}) in {self.locale} shows strings of the other language: {foreign}"
        self.checked.append(name)

    def fits(self, name: str) -> None:
        """No horizontal scrolling at 1280 px."""
        width = self.page.evaluate("document.documentElement.scrollWidth")
        assert width <= WIDTH, f"{name} is {width} px wide at a {WIDTH} px window"

    def one_line(self, selector: str) -> None:
        """Each matching element sits on one line (a check name must not wrap mid-word)."""
        lines = self.page.eval_on_selector_all(selector, "els => els.map(e => [e.textContent, e.getClientRects().length])")
        assert lines, selector
        wrapped = [text for text, rects in lines if rects != 1]
        assert not wrapped, f"{selector} wraps: {wrapped}"


@pytest.fixture(params=["zh-CN", "en"])
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    require_chromium()
    locale: str = request.param
    shots = ARTIFACTS / locale
    if shots.exists():
        shutil.rmtree(shots)
    shots.mkdir(parents=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = chromium.new_context(viewport={"width": WIDTH, "height": 900}, locale=locale)
        p = context.new_page()
        p.set_default_timeout(15_000)
        yield Browser(p, locale, shots)
        context.close()
        chromium.close()


def test_demo_journey_error_pages_and_console_in_both_languages(demo: DemoSetup, browser: Browser) -> None:
    b, p, t = browser, browser.page, browser.t
    user = DEMO_USERS[0]
    platform, bridge, sim = demo.platform_url, demo.bridge_url, demo.simulator_url
    sso_urls: list[str] = []
    p.on("request", lambda r: sso_urls.append(r.url) if r.url.startswith(bridge + "/saml/sso?") else None)

    # the demo shop
    p.goto(platform + "/")
    assert p.text_content("#title") == t("Huawei Cloud, bought and managed in one place")
    b.shot("01-shop-start")
    p.click("#sign-in")
    p.fill("input[name=user_id]", user.user_id)
    p.fill("input[name=password]", user.password)
    b.shot("02-shop-sign-in")
    p.click("button[type=submit]")
    p.wait_for_selector("#user")
    assert p.text_content("#user") == user.user_id
    b.shot("03-shop-signed-in")

    # open the console: hand-off -> bridge -> simulator login -> signed AuthnRequest -> bridge -> auto-POST -> ACS
    p.click("#open-console")
    p.wait_for_url(sim + "/authui/bind")  # first login: bind first
    assert "no\nHuawei Cloud account bound yet" in p.content()
    b.shot("04-huawei-first-login-bind", check_language=False)

    # bind: Huawei's signed notification goes through the browser to the bridge, which lands on the shop
    p.click("button[type=submit]")
    p.wait_for_url(re.compile(re.escape(platform) + r"/huawei/bound.*"))
    assert p.text_content("#title") == t("Huawei Cloud account linked")
    b.shot("05-shop-account-linked")

    # open the console again: bound now, straight in
    p.click("#open-console")
    p.wait_for_url(sim + "/console")
    console = p.content()
    assert user.email in console and user.user_id in console
    b.one_line("td.check-name")  # the simulator's check names do not wrap mid-word
    b.shot("06-huawei-console", check_language=False)

    # pay, then "View order details" comes back to the shop through the bridge
    p.click("text=Pay for an order")
    p.wait_for_selector("#order-details")
    b.shot("07-huawei-paid", check_language=False)
    p.click("#order-details")
    p.wait_for_url(re.compile(re.escape(platform) + r"/orders\?orderId=CS\d+"))
    assert t("Order number") in (p.text_content("#params") or "")  # labelled, not a raw dict
    assert "{" not in (p.text_content("main") or "")
    b.shot("08-shop-back-after-checkout")

    # -- error pages: what happened, what to do, the way back to the shop ------------------------------------
    assert len(sso_urls) == 2
    token = demo.platform.mint(user.user_id) if demo.platform else ""
    cases = [
        ("10-error-reload-of-sso", sso_urls[0], "This sign-in step has already been completed"),
        ("11-error-link-reused", f"{bridge}/go?sp=huawei-sim&token={token}", None),  # first use: fine
        ("11-error-link-reused", f"{bridge}/go?sp=huawei-sim&token={token}", "This link has already been used or has expired"),
        ("12-error-bad-token", f"{bridge}/go?sp=huawei-sim&token=not-a-token", "The platform's sign-in link could not be checked"),
        ("13-error-unknown-sp", f"{bridge}/go?sp=elsewhere", "This Huawei Cloud site is not available here"),
        ("14-error-foreign-service", f"{bridge}/go?sp=huawei-sim&service=https://evil.example/",
         "This page cannot be opened from the platform"),
        ("15-error-nothing-pending", f"{bridge}/saml/continue", "This sign-in step has already been completed"),
        ("16-error-not-found", f"{bridge}/no-such-page", "Page not found"),
    ]
    references: dict[str, str] = {}
    for name, url, title in cases:
        resp = p.goto(url)
        if title is None:
            continue
        assert resp is not None and 400 <= resp.status < 500, (name, resp and resp.status)
        assert p.text_content("#error-title") == t(title), name
        assert p.text_content("#error-next")
        assert (p.get_attribute("#back-to-platform", "href") or "").rstrip("/") == platform
        references[name] = p.text_content("#correlation-id") or ""
        b.shot(name)
    # the way back works, and the language switch on an error page
    p.click("#back-to-platform")
    p.wait_for_url(platform + "/")
    other = "en" if b.locale == "zh-CN" else "zh_CN"
    p.goto(f"{bridge}/go?sp=elsewhere")
    p.click(f"#language a[href*='/lang/{other}']")
    p.wait_for_load_state()
    assert p.get_attribute("html", "lang") == other.replace("_", "-")
    p.goto(f"{bridge}/lang/{b.locale.replace('-', '_')}?next=/")  # back to the language under test

    # -- the operator console -----------------------------------------------------------------------------------
    p.goto(bridge + "/_bridge/")
    b.shot("20-console-sign-in")
    p.fill("input[name=password]", OPERATOR_PASSWORD)
    p.click("#submit")
    p.wait_for_selector("#exchanges")
    rows = p.locator("#exchanges tr.exchange")
    kinds = [rows.nth(i).locator("td").nth(1).text_content() or "" for i in range(rows.count())]
    # the journey's two logins, the token's first use (a third) and the reloaded /saml/sso (refused, no Response)
    assert kinds.count("AuthnRequest") == 4 and kinds.count("Response") == 3 and kinds.count("bindRequest") == 1 \
        and kinds.count("return") == 1, kinds
    overview = p.content()
    assert "<th>xUserId</th><td>alice</td>" in overview
    assert re.search(r"<th>orderId</th><td><code>CS\d+</code>", overview)
    assert demo.config.entity_id in overview
    # operators keep the exact reason of each refusal: code, operator message and what the customer saw
    rejections = p.text_content("#rejections") or ""
    for code in ("request_replayed", "handoff_replayed", "input_jwt", "sp_unknown", "service_not_allowed"):
        assert code in rejections, code
    assert "was already used" in rejections
    b.fits("21-console")
    b.shot("21-console")
    collapsed = p.evaluate("document.documentElement.scrollHeight")
    p.locator("#exchanges tr.exchange details summary").first.click()  # expand one decoded Response
    b.fits("22-console-expanded")
    grown = p.evaluate("document.documentElement.scrollHeight") - collapsed
    assert 100 < grown < 800, grown  # its fields, attributes and a scrolling box for the XML, not the page
    widths = p.eval_on_selector_all("#exchanges tr:first-child th", "els => els.map(e => e.offsetWidth)")
    assert min(widths) >= 70, widths  # no column squeezed to a couple of letters
    b.shot("22-console-expanded")

    # search: by correlation id (the reloaded /saml/sso), by outcome, by SP
    p.fill("#search input[name=q]", references["10-error-reload-of-sso"])
    p.click("#search-submit")
    p.wait_for_selector("#exchanges")
    assert p.locator("#exchanges tr.exchange").count() == 1
    hit = p.text_content("#exchanges tr.exchange") or ""
    assert "request_replayed" in hit and "page-reused" in hit and "HTTP 400" in hit
    b.shot("23-console-search-correlation-id")
    p.goto(bridge + "/_bridge/?outcome=refused&sp=huawei-sim")
    assert p.locator("#exchanges tr.exchange").count() == 1
    p.goto(bridge + "/_bridge/?outcome=ok&sp=huawei-sim")
    kinds = [x.text_content() or "" for x in p.locator("#exchanges tr.exchange > td:nth-child(2)").all()]
    assert sorted(kinds) == ["AuthnRequest"] * 3 + ["Response"] * 3 + ["bindRequest"], kinds
    b.shot("24-console-search-ok")
    p.goto(bridge + "/_bridge/?outcome=ok&sp=elsewhere")
    assert p.locator("#exchanges tr.exchange").count() == 0
    p.goto(bridge + "/_bridge/?q=no-such-exchange")
    assert p.locator("#exchanges tr.exchange").count() == 0
    assert p.text_content("#no-exchanges") == t("No exchanges match.")

    # keys and metadata: the download, the fingerprints, the SP refresh
    p.click("#nav-trust")
    p.wait_for_url(bridge + "/_bridge/trust")
    with p.expect_download() as download:
        p.click("#metadata-download")
    assert download.value.suggested_filename == "IDP Metadata.xml"
    fingerprint = p.get_attribute("#keys button[data-copy]", "data-copy") or ""
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint), fingerprint
    p.click("#refresh-huawei-sim")
    p.wait_for_selector("#notice")
    assert "huawei-sim" in (p.text_content("#notice") or "")
    b.fits("25-console-keys-and-sps")
    b.shot("25-console-keys-and-sps")

    p.fill("input[name=user_id]", user.user_id)
    p.click("#test-login")
    p.wait_for_selector("#verdict")
    assert p.get_attribute("#verdict", "data-verdict") == "passed"
    assert p.text_content("#verdict") == t("passed")
    b.one_line("#checks td.check-name code")
    b.fits("26-console-test-login")
    b.shot("26-console-test-login")
    assert len(b.checked) == 19, b.checked
