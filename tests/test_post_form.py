"""The SSO answer page comes from a cached skeleton (web/post_form.py): it must be byte for byte what a direct
Jinja render of ``post_form.html`` gives, in both languages, with and without RelayState, for hostile values,
and a value that spells a placeholder is inserted as data, never filled in again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, g, render_template

from idp_bridge.config import load_config
from idp_bridge.idp.identity_provider import IdentityProvider, PostForm
from idp_bridge.store import Store
from idp_bridge.web import create_app
from idp_bridge.web.post_form import SLOTS, render_post_form
from tests.journey import extract_form, make_env

HOSTILE = "\"'><script>alert(1)</script>&amp;&#x27;\u202e中文"


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    env = make_env(tmp_path / "bridge", db_url)
    cfg = load_config(env.config.path, environ={})
    store = Store.from_url(cfg.database_url)
    yield create_app(bridge=IdentityProvider(cfg, store))
    store.dispose()


def direct(form: PostForm, nonce: str) -> str:
    g.csp_nonce = nonce
    return render_template("post_form.html", form=form)


@pytest.mark.parametrize("language", ["en", "zh-CN,zh;q=0.9"])
@pytest.mark.parametrize("relay_state", [None, "relay-1", HOSTILE, ""])
def test_cached_page_is_the_template_rendered(app: Flask, language: str, relay_state: str | None) -> None:
    forms = [PostForm("https://sp.example/acs?a=1&b=<2>", "PHNhbWw+" * 50, relay_state, "k1"),
             PostForm(HOSTILE, HOSTILE, relay_state, "k1")]
    for form in forms:
        for nonce in ("n0nce-1", "n0nce-2"):  # the second call of each comes from the cache
            with app.test_request_context("/saml/sso", headers={"Accept-Language": language}):
                assert render_post_form(form, nonce) == direct(form, nonce)


def test_languages_get_their_own_page(app: Flask) -> None:
    form = PostForm("https://sp.example/acs", "PHNhbWw+", "r", "k1")
    with app.test_request_context("/", headers={"Accept-Language": "zh-CN"}):
        zh = render_post_form(form, "n")
    with app.test_request_context("/", headers={"Accept-Language": "en"}):
        en = render_post_form(form, "n")
    assert 'lang="zh-CN"' in zh and "继续" in zh
    assert 'lang="en"' in en and "Continue to Huawei Cloud" in en


def test_a_value_spelling_a_placeholder_stays_data(app: Flask) -> None:
    form = PostForm("https://sp.example/acs", SLOTS["relaystate"] + SLOTS["nonce"], SLOTS["samlresponse"], "k1")
    with app.test_request_context("/"):
        page = render_post_form(form, "the-nonce")
        assert page == direct(form, "the-nonce")
    fields = extract_form(page)
    assert fields["SAMLResponse"] == SLOTS["relaystate"] + SLOTS["nonce"]
    assert fields["RelayState"] == SLOTS["samlresponse"]


def test_the_request_nonce_is_left_as_it_was(app: Flask) -> None:
    form = PostForm("https://sp.example/acs", "x", None, "k1")
    with app.test_request_context("/"):
        g.csp_nonce = "before"
        render_post_form(form, "before")
        assert g.csp_nonce == "before"
    with app.test_request_context("/"):
        render_post_form(form, "n")
        assert "csp_nonce" not in g
