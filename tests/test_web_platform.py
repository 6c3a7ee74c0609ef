"""The platform endpoints through the Flask app: hand-off, binding notification, returns, platform login."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from idp_bridge.devtools.simulator.partner_flows import build_bind_notification
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.saml.signing import PrivateKeySigner
from idp_bridge.store import Store
from idp_bridge.web import create_app
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import Env
from tests.pki import cached_key, make_key
from tests.platform_env import HS_SECRET, SHOP, mint, platform_env, rsa_platform_key

SERVICE = "https://console.huaweicloud.com/"


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return platform_env(tmp_path / "bridge", db_url, public_key=rsa_platform_key())


@pytest.fixture
def app(env: Env) -> Iterator[Flask]:
    store = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    application = create_app(bridge=IdentityProvider(env.config, store))
    application.testing = False
    yield application
    store.dispose()


def store_of(app: Flask) -> Store:
    s: Store = app.extensions["idp_bridge"].store
    return s


def jump(client: FlaskClient, token: str) -> tuple[int, dict[str, list[str]]]:
    resp = client.get("/go", query_string={"token": token, "service": SERVICE})
    loc = urlsplit(resp.headers.get("Location", ""))
    return resp.status_code, parse_qs(loc.query)


def bind_form(user: str, action: int = 0, key_name: str = "huawei-sp") -> dict[str, str]:
    key = cached_key(key_name)
    return build_bind_notification(PrivateKeySigner(key.private_key, key.certificate), x_user_id=user,
                                   domain_name="hw_" + user, domain_id="dom-" + user, bind_action=action)


# -- hand-off ---------------------------------------------------------------------------------------
def test_go_with_token_signs_in_and_jumps(app: Flask, env: Env) -> None:
    client = app.test_client()
    status, q = jump(client, mint(env, name="Wang Fang", email="w@shop.example"))
    assert status == 302 and q["xAccountType"] == ["partner-x"] and q["isFirstLogin"] == ["true"]
    assert q["service"] == [SERVICE]
    assert "Wang Fang" in client.get("/").get_data(as_text=True)  # a session now
    status, q = jump(app.test_client(), mint(env, "cust-2", bound=True))
    assert q["isFirstLogin"] == ["false"]  # the platform says it is bound (Create Customer API)
    status, q = jump(app.test_client(), mint(env, "cust-3", key=rsa_platform_key().private_key, alg="RS256"))
    assert status == 302


def public_key_pem() -> bytes:
    return rsa_platform_key().private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _hs256_with(secret: bytes, claims: dict[str, object]) -> str:
    """Built by hand: PyJWT itself refuses to HMAC with a PEM key, an attacker's tool does not."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def _no_session(client: FlaskClient) -> bool:
    return 'id="sign-in"' in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("case,code", [
    ("expired", "handoff_expired"), ("not_yet_valid", "handoff_not_yet_valid"), ("audience", "handoff_audience"),
    ("wrong_key", "handoff_signature"), ("alg_none", "handoff_alg_refused"), ("es_for_rs", "handoff_alg_refused"),
    ("hs_rs_confusion", "handoff_signature"), ("reused", "handoff_replayed"),
])
def test_go_refuses_bad_tokens_with_reason_and_no_session(app: Flask, env: Env, case: str, code: str) -> None:
    now = dt.datetime.now(dt.UTC)
    tokens = {
        "expired": lambda: mint(env, now=now - dt.timedelta(minutes=10)),
        "not_yet_valid": lambda: mint(env, now=now + dt.timedelta(minutes=10)),
        "audience": lambda: mint(env, aud="https://someone-else.example/saml/metadata"),
        "wrong_key": lambda: mint(env, key="z" * 40),
        "alg_none": lambda: jwt.encode({"sub": "cust-1001", "aud": env.config.entity_id, "iat": int(now.timestamp()),
                                        "exp": int(now.timestamp()) + 60, "jti": "n1"}, "", algorithm="none"),
        # an ES256 token offered to a bridge whose public key is pinned to RS256
        "es_for_rs": lambda: mint(env, key=make_key("es", curve=True).private_key, alg="ES256"),
        # the classic confusion: HS256 keyed with the platform's PUBLIC key (which an attacker can read)
        "hs_rs_confusion": lambda: _hs256_with(public_key_pem(), {
            "sub": "cust-1001", "aud": env.config.entity_id, "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + 60, "jti": "confused-1"}),
    }
    client = app.test_client()
    if case == "reused":
        token = mint(env)
        assert jump(app.test_client(), token)[0] == 302
    else:
        token = tokens[case]()
    resp = client.get("/go", query_string={"token": token, "service": SERVICE})
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert _no_session(client)
    refusal = store_of(app).audit.recent(1)[0]
    assert (refusal.event, refusal.reason_code) == ("rejection", code)
    assert refusal.detail and refusal.detail["reason"] and token not in str(refusal.detail)


def test_go_validates_service_before_using_the_token(app: Flask, env: Env) -> None:
    token = mint(env)
    assert app.test_client().get("/go", query_string={"token": token, "service": "https://evil.example/"}
                                 ).status_code == 400
    assert jump(app.test_client(), token)[0] == 302  # the jti was not burned by the refused jump


def test_handoff_entry_continues_to_own_paths_only(app: Flask, env: Env) -> None:
    client = app.test_client()
    resp = client.get("/handoff", query_string={"token": mint(env), "next": "//evil.example/x"})
    assert resp.status_code == 302 and urlsplit(resp.headers["Location"]).netloc in ("", "127.0.0.1:5000")
    assert resp.headers["Location"].endswith("/")
    resp = app.test_client().get("/handoff", query_string={"token": mint(env), "next": "/go?service=" + SERVICE})
    assert resp.headers["Location"].startswith("/go?")


def test_platform_login_url_gets_return_to_our_handoff(tmp_path: Path, db_url: str) -> None:
    env = platform_env(tmp_path / "b", db_url, login_url=SHOP + "/login")
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    app = create_app(bridge=IdentityProvider(env.config, store))
    client = app.test_client()
    resp = client.get("/go", query_string={"service": SERVICE})
    loc = urlsplit(resp.headers["Location"])
    assert (loc.scheme, loc.netloc, loc.path) == ("https", "shop.example", "/login")
    return_to = parse_qs(loc.query)["return_to"][0]
    assert return_to.startswith(env.config.base_url + "/handoff?next=")
    # the platform signs the customer in and appends the token to return_to
    back = client.get(return_to[len(env.config.base_url):] + "&token=" + mint(env))
    assert back.status_code == 302 and back.headers["Location"].startswith("/go?")
    final = client.get(back.headers["Location"])
    assert final.headers["Location"].startswith("https://auth.huaweicloud.com/authui/saml/login?")
    store.dispose()


# -- binding ----------------------------------------------------------------------------------------
def first_login_jump(app: Flask, env: Env, user: str) -> FlaskClient:
    """What precedes an honest bind notice: the bridge sends the customer to Huawei with isFirstLogin=true."""
    client = app.test_client()
    status, q = jump(client, mint(env, user))
    assert status == 302 and q["isFirstLogin"] == ["true"]
    return client


def test_signed_notification_is_stored_and_lands_on_platform(app: Flask, env: Env) -> None:
    first_login_jump(app, env, "cust-1001")
    resp = app.test_client().post("/huawei/bind", data=bind_form("cust-1001"))
    assert resp.status_code == 303 and resp.headers["Location"] == SHOP + "/huawei/bound?result=bound"
    b = store_of(app).bindings.get("cust-1001")
    assert b is not None and b.bound and b.domain_id == "dom-cust-1001" and b.payload is not None \
        and b.payload["domainName"] == "hw_cust-1001"
    event = store_of(app).audit.recent(1)[0]
    assert (event.event, event.outcome, event.customer, event.sp) == ("binding", "ok", "cust-1001", "huawei-cn")
    assert event.detail and event.detail["signed_octets"] == "bindRequest"


def test_tampered_or_unsigned_notification_is_400_and_stores_nothing(app: Flask) -> None:
    form = bind_form("cust-1001")
    other = bind_form("victim")
    tampered = dict(form, bindRequest=other["bindRequest"])
    for data in (tampered, {k: v for k, v in form.items() if k != "Signature"}, bind_form("x", key_name="not-huawei")):
        resp = app.test_client().post("/huawei/bind", data=data)
        assert resp.status_code == 400 and "Location" not in resp.headers
    assert store_of(app).bindings.all() == [] and store_of(app).outbox.messages() == []
    codes = [e.reason_code for e in store_of(app).audit.recent(3)]
    assert codes == ["bind_signature", "bind_missing_field", "bind_signature"]  # newest first


def test_bind_then_unbind_drives_is_first_login(app: Flask, env: Env) -> None:
    client = app.test_client()
    assert jump(client, mint(env))[1]["isFirstLogin"] == ["true"]  # records the first-login jump
    client.post("/huawei/bind", data=bind_form("cust-1001"))
    assert jump(client, mint(env))[1]["isFirstLogin"] == ["false"]
    client.post("/huawei/bind", data=bind_form("cust-1001", action=1))
    assert store_of(app).bindings.get("cust-1001").bound is False  # type: ignore[union-attr]
    assert jump(client, mint(env))[1]["isFirstLogin"] == ["true"]


def test_repeated_notification_is_idempotent(app: Flask, env: Env) -> None:
    first_login_jump(app, env, "cust-7")
    form = bind_form("cust-7")
    for _ in range(3):
        assert app.test_client().post("/huawei/bind", data=form).status_code == 303
    assert len(store_of(app).bindings.all()) == 1


# -- return after checkout --------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["//evil.example", "/\\evil.example", "https:evil.example",
                                   "https://shop.example@evil.example", "https://evil.example%2F%2F@shop.example",
                                   "%2F%2Fevil.example", "javascript:alert(1)"])
@pytest.mark.parametrize("path,page", [("/huawei/return", "/orders"), ("/huawei/recharge", "/wallet")])
def test_return_never_leaves_configured_host(app: Flask, value: str, path: str, page: str) -> None:
    raw = (f"{path}?orderId={value}&next={value}&return_to={value}&url={value}&service={value}"
           f"&orderId=second")
    resp = app.test_client().get(raw)
    assert resp.status_code == 302
    loc = urlsplit(resp.headers["Location"])
    assert (loc.scheme, loc.netloc, loc.path, loc.fragment) == ("https", "shop.example", page, "")
    assert set(parse_qs(loc.query)) <= {"orderId"}
    event = store_of(app).audit.recent(1)[0]
    assert event.event == "return" and event.reason_code in ("payment", "recharge")


def test_return_keeps_configured_params(app: Flask) -> None:
    resp = app.test_client().get("/huawei/return?orderId=CS123&amount=9.90&secret=x")
    assert resp.headers["Location"] == SHOP + "/orders?orderId=CS123&amount=9.90"


def test_hs256_secret_from_environment(tmp_path: Path, db_url: str) -> None:
    from idp_bridge.config import load_config

    env = platform_env(tmp_path / "b", db_url)
    cfg = load_config(env.config.path, environ={"IDP_BRIDGE_HANDOFF_SECRET": "e" * 40})
    assert cfg.platform.handoff_secret == "e" * 40 and HS_SECRET != "e" * 40
