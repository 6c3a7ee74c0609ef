"""Huawei's attribute rules enforced where we issue: ``users add``, hand-off claims, and before signing.

A customer whose email or mobile Huawei would refuse is never signed for (422 page, no SAMLResponse); the
same customer with the rules turned off in ``[huawei]`` is signed for, and the honest customer always is.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from idp_bridge.config import load_config, read_raw_config, write_raw_config
from idp_bridge.huawei.attribute_rules import AttributeRuleError, AttributeRules
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.store import Store
from idp_bridge.web import create_app
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, Env
from tests.platform_env import mint, platform_env
from tests.servers import idp_bridge_cmd

SERVICE = "https://console.huaweicloud.com/"


def test_rules_name_what_huawei_refuses() -> None:
    rules = AttributeRules()
    assert rules.problems({"xUserId": ["c1"], "email": ["a@b.example"], "mobile": ["0086-13800000000"]}) == []
    found = rules.problems({"xUserId": [" "], "email": ["not-an-email", "x" * 60 + "@b.example"], "mobile": ["138"]})
    assert [p.split(":")[0].split(" ")[0] for p in found] == ["xUserId", "email", "email", "mobile"]
    assert "at most 64" in found[2] and "0086-13800000000" in found[3]
    assert AttributeRules(enabled=False).problems({"email": ["not-an-email"]}) == []
    assert AttributeRules(mobile_pattern=r"^\+\d+$").mobile_problem("+8613800000000") is None
    with pytest.raises(AttributeRuleError) as exc:
        AttributeRules().check_customer(email="not-an-email", mobile=None, where="users add c1")
    assert exc.value.code == "attribute_invalid" and exc.value.status == 422


def _app(env: Env, *, email: str, check: bool = True) -> Iterator[Flask]:
    if not check:
        path = env.config.path
        assert path is not None
        raw = read_raw_config(path)
        raw["huawei"] = {**raw.get("huawei", {}), "check_attributes": False}
        write_raw_config(path, raw)
        env.config = load_config(path, environ={})
    store = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email=email, name="Wang Fang", mobile="0086-13800000000")
    app = create_app(bridge=IdentityProvider(env.config, store))
    app.testing = False
    yield app
    store.dispose()


def _sso_after_login(app: Flask, env: Env) -> tuple[int, str]:
    client = app.test_client()
    first = client.get("/saml/sso?" + env.redirect_query(env.authn_request()))
    assert first.status_code == 302
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    client.post("/login", data={"user_id": "cust-1001", "password": PASSWORD, "csrf_token": token.group(1)})
    done = client.get("/saml/continue")
    return done.status_code, done.get_data(as_text=True)


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return platform_env(tmp_path / "bridge", db_url)


def test_nothing_huawei_would_refuse_is_signed(env: Env) -> None:
    for app in _app(env, email="not-an-email"):
        status, body = _sso_after_login(app, env)
        assert status == 422 and "SAMLResponse" not in body


def test_honest_customer_is_signed(env: Env) -> None:
    for app in _app(env, email="c1001@partner.example"):
        status, body = _sso_after_login(app, env)
        assert status == 200 and 'name="SAMLResponse"' in body


def test_the_rules_can_be_turned_off(env: Env) -> None:
    for app in _app(env, email="not-an-email", check=False):
        status, body = _sso_after_login(app, env)
        assert status == 200 and 'name="SAMLResponse"' in body


def test_hand_off_claims_are_checked_before_the_token_is_spent(env: Env) -> None:
    store = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    app = create_app(bridge=IdentityProvider(env.config, store))
    app.testing = False
    client = app.test_client()
    bad = client.get("/go", query_string={"token": mint(env, email="x" * 70 + "@shop.example"), "service": SERVICE})
    assert bad.status_code == 422 and "Location" not in bad.headers
    assert client.get("/go", query_string={"service": SERVICE}).status_code == 302  # still signed out: to /login
    good = client.get("/go", query_string={"token": mint(env, email="c1001@shop.example"), "service": SERVICE})
    assert good.status_code == 302 and "auth.huaweicloud.com" in good.headers["Location"]
    store.dispose()


def test_users_add_refuses_a_bad_email_in_one_line(env: Env) -> None:
    assert env.config.path is not None
    cmd = [*idp_bridge_cmd("--config", str(env.config.path)), "users", "add", "cust-2", "--email", "not-an-email"]
    done = subprocess.run(cmd, input="a-long-password\n", capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "not a well-formed address" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    store = Store.from_url(env.config.database_url)
    assert store.users.get("cust-2") is None
    store.dispose()
