"""Pages in zh-CN and English: the catalogue covers every string and the committed .mo is the .po compiled;
the language comes from the lang cookie, Accept-Language, then ``[ui] default_locale``; each cause of a
refusal gets its own customer message (what happened, what to do, the way back to the platform) in both
languages, while the audit keeps the exact reason."""

from __future__ import annotations

import datetime as dt
import gettext
import re
import subprocess
import sys
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from babel.messages.pofile import read_po
from flask import Flask
from flask.testing import FlaskClient

from idp_bridge.config import load_config, read_raw_config, write_raw_config
from idp_bridge.errors import ConfigError
from idp_bridge.store import Store
from idp_bridge.web import create_app
from idp_bridge.web.i18n import TRANSLATIONS
from idp_bridge.web.messages import FAMILIES, family_for
from tests.conftest import FAST_PASSWORD_HASHER
from tests.i18n_strings import PO, catalogue, foreign_strings_in
from tests.journey import PASSWORD, Env
from tests.platform_env import SHOP, mint, platform_env

ROOT = Path(__file__).resolve().parents[1]
MO = PO.with_suffix(".mo")
ZH = gettext.GNUTranslations(MO.open("rb"))
PLACEHOLDER = re.compile(r"%\([a-z_]+\)[sd]")


# --------------------------------------------------------------------------- the catalogue


def test_every_string_in_the_sources_is_translated(tmp_path: Path) -> None:
    """Extract afresh (as scripts/i18n.sh does): a string added to a template or view without its Chinese
    fails here."""
    pot = tmp_path / "messages.pot"
    subprocess.run([str(Path(sys.executable).with_name("pybabel")), "-q", "extract", "-F", "babel.cfg", "-k", "_l",
                    "-k", "lazy_gettext", "--no-location", "-o", str(pot), "."], cwd=ROOT, check=True)
    with pot.open("rb") as fh:
        extracted = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}
    assert len(extracted) > 150  # the extraction really read the templates
    with PO.open("rb") as fh:
        po = {m.id if isinstance(m.id, str) else m.id[0]: m for m in read_po(fh) if m.id}
    missing = sorted(extracted - set(po))
    assert not missing, f"run scripts/i18n.sh and translate: {missing}"
    for msgid in extracted:
        m = po[msgid]
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        assert all(strings) and "fuzzy" not in m.flags, f"untranslated or fuzzy: {msgid!r}"
        for s in strings:
            assert isinstance(s, str), (msgid, s)
            assert sorted(PLACEHOLDER.findall(s)) == sorted(PLACEHOLDER.findall(msgid)), (msgid, s)
            assert re.search(r"[\u4e00-\u9fff]", s), f"not Chinese: {msgid!r} -> {s!r}"


def test_the_committed_mo_is_the_po_compiled() -> None:
    with PO.open("rb") as fh:
        messages = [m for m in read_po(fh) if m.id]
    assert len(messages) == len({m for m in catalogue() if m in {x.id if isinstance(x.id, str) else x.id[0]
                                                                 for x in messages}})
    for m in messages:
        if isinstance(m.id, tuple):
            assert isinstance(m.string, (tuple, list)), m.id
            for n in (1, 5):
                assert ZH.ngettext(m.id[0], m.id[1], n) == m.string[0], f"{MO.name} is stale: {m.id!r}"
        else:
            assert isinstance(m.id, str) and isinstance(m.string, str), m.id
            assert ZH.gettext(m.id) == m.string, f"{MO.name} is stale (run scripts/i18n.sh): {m.id!r}"


def test_the_translations_are_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"web/translations/*/LC_MESSAGES/*.mo"' in text and '"devtools/platform_templates/*.html"' in text
    assert (TRANSLATIONS / "zh_Hans_CN" / "LC_MESSAGES" / "messages.mo").is_file()


# --------------------------------------------------------------------------- choosing the language


def _set(env: Env, table: str, values: dict[str, Any]) -> None:
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw.setdefault(table, {}).update(values)
    write_raw_config(env.config.path, raw)
    env.config = load_config(env.config.path, environ={})


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    e = platform_env(tmp_path / "bridge", db_url)
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email="c1001@partner.example", name="Cust 1001", mobile="0086-1380000")
    store.dispose()
    return e


@pytest.fixture
def app(env: Env) -> Flask:
    app = create_app(env.config.path)
    app.config["TESTING"] = True
    return app


def lang_of(html: str) -> str:
    found = re.search(r'<html lang="([^"]+)"', html)
    assert found, html[:200]
    return found.group(1)


@pytest.mark.parametrize("header,expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"), ("zh", "zh-CN"), ("zh-TW", "zh-CN"), ("zh-Hans", "zh-CN"),
    ("en-US,en;q=0.9", "en"), ("en-GB", "en"), ("fr-FR", "en"), ("", "en"), ("de, zh-CN;q=0.5", "zh-CN"),
    ("en;q=0.4, zh;q=0.8", "zh-CN"),
    # longer than the remembered headers (web/i18n.py MAX_CACHED_HEADER): parsed each time, same rule
    (", ".join(f"x{i}-y;q=0.{i % 9 + 1}" for i in range(30)) + ", zh;q=0.05", "zh-CN"),
])
def test_accept_language_picks_the_page_language(app: Flask, header: str, expected: str) -> None:
    page = app.test_client().get("/login", headers={"Accept-Language": header} if header else {})
    html = page.get_data(as_text=True)
    assert lang_of(html) == expected
    assert ("用户 ID" in html) == (expected == "zh-CN") and ("User ID" in html) == (expected == "en")
    assert not foreign_strings_in(html, expected)
    # asked again (the answer for a short header is remembered): the same page language
    assert lang_of(app.test_client().get("/login", headers={"Accept-Language": header} if header else {})
                   .get_data(as_text=True)) == expected


def test_default_locale_is_configurable(env: Env) -> None:
    _set(env, "ui", {"default_locale": "zh-CN"})
    assert env.config.ui.default_locale == "zh_CN"
    client = create_app(env.config.path).test_client()
    assert lang_of(client.get("/login").get_data(as_text=True)) == "zh-CN"  # no Accept-Language
    assert lang_of(client.get("/login", headers={"Accept-Language": "fr"}).get_data(as_text=True)) == "zh-CN"
    assert lang_of(client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)) == "en"


@pytest.mark.parametrize("raw,code", [({"default_locale": "fr"}, "config_range"), ({"locale": "en"}, "config_unknown_key")])
def test_bad_ui_settings_are_refused(env: Env, raw: dict[str, str], code: str) -> None:
    with pytest.raises(ConfigError) as err:
        _set(env, "ui", raw)
    assert err.value.code == code


def test_the_language_switch_remembers_the_choice_and_stays_on_our_pages(app: Flask) -> None:
    client = app.test_client()
    resp = client.get("/lang/zh_CN?next=/login", headers={"Accept-Language": "en"})
    assert resp.status_code == 303 and resp.headers["Location"] == "/login"
    assert "lang=zh_CN" in resp.headers["Set-Cookie"] and "HttpOnly" in resp.headers["Set-Cookie"]
    assert lang_of(client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)) == "zh-CN"
    assert client.get("/lang/en?next=//evil.example/").headers["Location"] == "/"  # only our own paths
    bogus = client.get("/lang/xx?next=/login")
    assert bogus.status_code == 303 and "Set-Cookie" not in bogus.headers
    client.set_cookie("lang", "xx")  # a cookie we did not set: ignored
    assert lang_of(client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)) == "en"


def test_the_switch_never_replays_a_one_time_url(app: Flask) -> None:
    """The footer link on a page reached by /go?token= or /saml/sso goes back to the start, not to that URL."""
    page = app.test_client().get("/go?sp=nope").get_data(as_text=True)
    assert 'href="/lang/zh_CN?next=/"' in page
    assert 'href="/lang/zh_CN?next=/login"' in app.test_client().get("/login").get_data(as_text=True)


# --------------------------------------------------------------------------- error pages by cause


def _sso(env: Env, **kw: Any) -> str:
    return "/saml/sso?" + env.redirect_query(env.authn_request(**kw))


CAUSES: dict[str, tuple[str, int, str]] = {
    # name: (family, status, the code the audit keeps)
    "reused token": ("link-used", 400, "handoff_replayed"),
    "expired token": ("link-used", 400, "handoff_expired"),
    "forged token": ("handoff-invalid", 400, "handoff_signature"),
    "garbage token": ("handoff-invalid", 400, "input_jwt"),
    "unknown sp": ("site-unknown", 400, "sp_unknown"),
    "foreign service": ("page-not-allowed", 400, "service_not_allowed"),
    "reload of /saml/sso": ("page-reused", 400, "request_replayed"),
    "nothing pending": ("page-reused", 400, "no_pending_request"),
    "stale request": ("request-expired", 400, "request_stale"),
    "bad signature": ("not-verified", 400, "signature_invalid"),
    "no csrf token": ("session-expired", 400, "csrf_failed"),
    "bad binding notice": ("binding-failed", 400, ""),
}


def _provoke(client: FlaskClient, env: Env, cause: str, headers: dict[str, str]) -> Any:
    def get(url: str) -> Any:
        return client.get(url, headers=headers)

    if cause == "reused token":
        token = mint(env)
        assert get(f"/go?sp=huawei-cn&token={token}").status_code == 302
        return get(f"/go?sp=huawei-cn&token={token}")
    if cause == "expired token":
        return get("/go?token=" + mint(env, now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)))
    if cause == "forged token":
        return get("/go?token=" + mint(env, key="another-secret-of-at-least-32-bytes!!"))
    if cause == "garbage token":
        return get("/go?token=not-a-token")
    if cause == "unknown sp":
        return get("/go?sp=elsewhere")
    if cause == "foreign service":
        return get("/go?service=https://evil.example/")
    if cause == "reload of /saml/sso":
        url = _sso(env, request_id="_reloaded")
        assert get(url).status_code == 302
        return get(url)
    if cause == "nothing pending":
        return get("/saml/continue")
    if cause == "stale request":
        return get(_sso(env, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    if cause == "bad signature":
        query = env.redirect_query(env.authn_request())
        return get("/saml/sso?" + re.sub(r"Signature=[^&]+", "Signature=AAAA", query))
    if cause == "no csrf token":
        return client.post("/login", data={"user_id": "cust-1001", "password": PASSWORD}, headers=headers)
    if cause == "bad binding notice":
        return client.post("/huawei/bind", data={"bindRequest": "e30", "SigAlg": "x", "Signature": "AAAA"},
                           headers=headers)
    raise AssertionError(cause)


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_each_cause_tells_the_customer_what_happened_and_the_way_back(app: Flask, env: Env, cause: str,
                                                                      locale: str) -> None:
    family, status, code = CAUSES[cause]
    resp = _provoke(app.test_client(), env, cause, {"Accept-Language": locale})
    html = resp.get_data(as_text=True)
    assert resp.status_code == status, (cause, resp.status_code)
    f = FAMILIES[family]
    with app.test_request_context("/", headers={"Accept-Language": locale}):
        for text in (f.title, f.what, f.next_step):
            assert str(text) in unescape(html), (cause, str(text))
    assert lang_of(html) == locale and not foreign_strings_in(html, locale)
    assert f'data-family="{family}"' in html
    assert 'id="back-to-platform" href="/"' in html  # no platform home or login configured: our start page
    cid = resp.headers["X-Correlation-Id"]
    assert cid in html
    if code:
        assert code not in html  # the reason stays with the operator...
        event = next(e for e in app.extensions["idp_bridge"].store.audit.recent(20) if e.correlation_id == cid)
        assert event.reason_code == code and event.detail["shown"] == family  # ...with what the customer saw


def test_the_way_back_is_the_platform_home_else_its_login(env: Env) -> None:
    _set(env, "platform", {"login_url": SHOP + "/signin"})
    page = create_app(env.config.path).test_client().get("/go?sp=elsewhere").get_data(as_text=True)
    assert f'id="back-to-platform" href="{SHOP}/signin"' in page
    _set(env, "platform", {"home_url": SHOP + "/home"})
    page = create_app(env.config.path).test_client().get("/go?sp=elsewhere").get_data(as_text=True)
    assert f'id="back-to-platform" href="{SHOP}/home"' in page


def test_status_families_without_a_code() -> None:
    assert family_for(None, 429).name == "too-many" and family_for("login_locked", 429).name == "too-many"
    assert family_for("store_unavailable", 503).name == "unavailable" and family_for(None, 503).name == "unavailable"
    assert family_for(None, 404).name == "not-found"
    assert family_for("metadata_fetch", 500).name == "setup" and family_for("whatever", 400).name == "generic"
    assert family_for("signature_digest_mismatch", 400).name == "not-verified"
    codes = {c for f in (ROOT / "idp_bridge").rglob("*.py") for c in re.findall(r'code="([a-z0-9_]+)"', f.read_text())}
    assert len(codes) > 100 and not codes & set(FAMILIES)  # a family name on the page never names a code


def test_not_found_and_throttled_sign_in_in_chinese(app: Flask, env: Env) -> None:
    client = app.test_client()
    zh = {"Accept-Language": "zh-CN"}
    missing = client.get("/no-such-page", headers=zh)
    assert missing.status_code == 404 and ZH.gettext("Page not found") in missing.get_data(as_text=True)
    page = client.get("/login", headers=zh).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    for _ in range(env.config.limits.login_account_attempts + 1):
        resp = client.post("/login", data={"user_id": "cust-1001", "password": "wrong", "csrf_token": token.group(1)},
                           headers=zh)
    assert resp.status_code == 429
    html = resp.get_data(as_text=True)
    assert "登录尝试次数过多" in html and not foreign_strings_in(html, "zh-CN")
