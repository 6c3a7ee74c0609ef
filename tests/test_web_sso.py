"""The SSO round trip through the Flask test client, judged by python3-saml (strict) and xmlsec1,
plus every rejection: 4xx, no SAMLResponse, no session, a log line naming the reason."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.saml.algorithms import RSA_SHA1
from idp_bridge.store import Store
from idp_bridge.web import create_app
from idp_bridge.web.sessions import COOKIE_NAME
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import (
    PASSWORD,
    SP_ACS,
    Env,
    extract_form,
    make_env,
    metadata_certificate_b64,
    python3_saml_validate,
    xmlsec1_verify,
)


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return make_env(tmp_path / "bridge", db_url)


@pytest.fixture
def app(env: Env) -> Iterator[Flask]:
    store = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email="c1001@partner.example", name="Wang Fang", mobile="0086-13800000000")
    application = create_app(bridge=IdentityProvider(env.config, store))
    application.testing = False  # exercise the real error handlers
    yield application
    store.dispose()


def login(client: FlaskClient, user_id: str = "cust-1001", password: str = PASSWORD):  # type: ignore[no-untyped-def]
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token, "login form has a CSRF token"
    return client.post("/login", data={"user_id": user_id, "password": password, "csrf_token": token.group(1)})


def run_sso(client: FlaskClient, env: Env, query: str) -> dict[str, str]:
    first = client.get("/saml/sso?" + query)
    assert first.status_code == 302 and first.headers["Location"].endswith("/login"), first.get_data(as_text=True)
    after_login = login(client)
    assert after_login.status_code == 302 and after_login.headers["Location"].endswith("/saml/continue")
    page = client.get("/saml/continue")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "form-action https://auth.huaweicloud.com" in page.headers["Content-Security-Policy"]
    return extract_form(page.get_data(as_text=True))


def test_round_trip_is_valid_for_python3_saml_and_xmlsec1(app: Flask, env: Env) -> None:
    client = app.test_client()
    metadata = client.get("/saml/metadata")
    assert metadata.status_code == 200 and metadata.headers["ETag"]
    app.extensions["idp_bridge"].export_metadata()  # what `idp-bridge metadata export` writes
    exported = env.config.metadata_file.read_bytes()
    assert exported == metadata.data  # the peers below trust exactly the exported file
    xml = env.authn_request(request_id="_req-roundtrip-1")
    form = run_sso(client, env, env.redirect_query(xml, relay_state="a&b<c>"))
    assert form["action"] == SP_ACS
    assert form["RelayState"] == "a&b<c>"  # echoed unchanged (HTML-escaped in the page, parsed back here)

    ok, error, attrs = python3_saml_validate(form["SAMLResponse"], idp_metadata_xml=exported,
                                             request_id="_req-roundtrip-1")
    assert ok, error
    assert attrs["xUserId"] == ["cust-1001"]
    assert attrs["xAccountId"] == ["cust-1001"]
    assert attrs["bpId"] == ["bp-0001"]
    assert attrs["email"] == ["c1001@partner.example"]
    assert attrs["mobile"] == ["0086-13800000000"]

    (cert,) = metadata_certificate_b64(exported)
    verified = xmlsec1_verify(base64.b64decode(form["SAMLResponse"]), cert)
    assert verified.returncode == 0, verified.stderr


def test_response_signed_too_when_sp_asks(tmp_path: Path, db_url: str) -> None:
    env = make_env(tmp_path / "b", db_url, sign_response=True)
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD)
    client = create_app(bridge=IdentityProvider(env.config, store)).test_client()
    metadata = client.get("/saml/metadata").data
    form = run_sso(client, env, env.redirect_query(env.authn_request(request_id="_req-signed-resp")))
    xml = base64.b64decode(form["SAMLResponse"])
    (cert,) = metadata_certificate_b64(metadata)
    for node in ("Assertion", "Response"):
        result = xmlsec1_verify(xml, cert, node=node)
        assert result.returncode == 0, (node, result.stderr)
    ok, error, _ = python3_saml_validate(form["SAMLResponse"], idp_metadata_xml=metadata,
                                         request_id="_req-signed-resp")
    assert ok, error


def test_logged_in_customer_gets_response_without_login_step(app: Flask, env: Env) -> None:
    client = app.test_client()
    login(client)
    page = client.get("/saml/sso?" + env.redirect_query(env.authn_request()))
    assert page.status_code == 200
    assert "SAMLResponse" in extract_form(page.get_data(as_text=True))


def test_session_rotated_at_login(app: Flask, env: Env) -> None:
    client = app.test_client()
    client.get("/saml/sso?" + env.redirect_query(env.authn_request()))
    before = client.get_cookie(COOKIE_NAME)
    assert before is not None
    login(client)
    after = client.get_cookie(COOKIE_NAME)
    assert after is not None and after.value != before.value
    # the pre-login token no longer opens a session
    other = app.test_client()
    other.set_cookie(COOKIE_NAME, before.value)
    assert other.get("/saml/continue").status_code == 400


def test_login_requires_csrf_token(app: Flask) -> None:
    client = app.test_client()
    client.get("/login")
    resp = client.post("/login", data={"user_id": "cust-1001", "password": PASSWORD})
    assert resp.status_code == 400
    assert client.get("/").get_data(as_text=True).count("Sign in") >= 1


def test_wrong_password_is_refused(app: Flask) -> None:
    resp = login(app.test_client(), password="nope-nope")
    assert resp.status_code == 401


# -- rejections -------------------------------------------------------------------------------------
def _tamper_signature(query: str) -> str:
    params = dict(p.split("=", 1) for p in query.split("&"))
    sig = bytearray(base64.b64decode(params["Signature"].replace("%2B", "+").replace("%2F", "/")
                                     .replace("%3D", "=")))
    sig[10] ^= 0x01
    params["Signature"] = quote(base64.b64encode(bytes(sig)).decode(), safe="")
    return "&".join(f"{k}={v}" for k, v in params.items())


def _with_sigalg(env: Env, xml: bytes, sig_alg: str) -> str:
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = raw.compress(xml) + raw.flush()
    signed = f"SAMLRequest={quote(base64.b64encode(deflated).decode(), safe='')}&SigAlg={quote(sig_alg, safe='')}"
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    assert isinstance(env.huawei_key.private_key, rsa.RSAPrivateKey)
    sig = env.huawei_key.private_key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA1())
    return signed + "&Signature=" + quote(base64.b64encode(sig).decode(), safe="")


def _bomb_query() -> str:
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = raw.compress(b"<a>" + b" " * (10 * 1024 * 1024)) + raw.flush()
    return "SAMLRequest=" + quote(base64.b64encode(deflated).decode(), safe="")


def _doctype_request(env: Env) -> bytes:
    xml = env.authn_request().decode()
    head, body = xml.split("?>", 1) if xml.startswith("<?xml") else ("", xml)
    doctype = '<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
    return ((head + "?>" if head else "") + doctype + body).encode()


REJECTIONS: dict[str, tuple[Callable[[Env], str], str]] = {
    "unsigned": (lambda env: env.redirect_query(env.authn_request(), signed=False), "signature_missing"),
    "bad_signature": (lambda env: _tamper_signature(env.redirect_query(env.authn_request())), "signature_invalid"),
    "sha1_sigalg": (lambda env: _with_sigalg(env, env.authn_request(), RSA_SHA1), "sigalg_refused"),
    "unknown_issuer": (lambda env: env.redirect_query(env.authn_request(issuer="https://evil.example/")),
                       "unknown_issuer"),
    "acs_not_in_metadata": (lambda env: env.redirect_query(env.authn_request(acs_url="https://evil.example/acs")),
                            "acs_not_in_metadata"),
    "stale": (lambda env: env.redirect_query(env.authn_request(
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10))), "request_stale"),
    "future": (lambda env: env.redirect_query(env.authn_request(
        now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))), "request_from_future"),
    "duplicated_samlrequest": (lambda env: (lambda q: q + "&" + q.split("&")[0])(
        env.redirect_query(env.authn_request())), "duplicate_parameter"),
    "deflate_bomb": (lambda env: _bomb_query(), "inflate_too_large"),
    "doctype_entity": (lambda env: env.redirect_query(_doctype_request(env)), "xml_dtd_forbidden"),
    "wrong_destination": (lambda env: env.redirect_query(env.authn_request(
        destination="https://other-idp.example/sso")), "destination_mismatch"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejected_requests(app: Flask, env: Env, case: str, caplog: pytest.LogCaptureFixture) -> None:
    build, code = REJECTIONS[case]
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger="idp_bridge"):
        resp = client.get("/saml/sso?" + build(env))
    body = resp.get_data(as_text=True)
    assert 400 <= resp.status_code < 500, (resp.status_code, body)
    assert "SAMLResponse" not in body
    assert resp.headers["X-Correlation-Id"] in body  # the browser gets a reference, not the reason
    assert code not in body
    assert client.get_cookie(COOKIE_NAME) is None  # no session was created
    assert any(code in r.getMessage() and resp.headers["X-Correlation-Id"] in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_replayed_request_refused(app: Flask, env: Env, caplog: pytest.LogCaptureFixture) -> None:
    query = env.redirect_query(env.authn_request(request_id="_replay-me"))
    assert app.test_client().get("/saml/sso?" + query).status_code == 302
    second = app.test_client()
    with caplog.at_level(logging.INFO, logger="idp_bridge"):
        resp = second.get("/saml/sso?" + query)
    assert resp.status_code == 400
    assert "SAMLResponse" not in resp.get_data(as_text=True)
    assert second.get_cookie(COOKIE_NAME) is None
    assert any("request_replayed" in r.getMessage() and "_replay-me" in r.getMessage() for r in caplog.records)


def test_sha1_sigalg_rejected_even_for_logged_in_customer(app: Flask, env: Env) -> None:
    client = app.test_client()
    login(client)
    resp = client.get("/saml/sso?" + _with_sigalg(env, env.authn_request(), RSA_SHA1))
    assert resp.status_code == 400 and "SAMLResponse" not in resp.get_data(as_text=True)


# -- console jump -----------------------------------------------------------------------------------
def test_go_redirects_logged_in_customer_to_huawei_login(app: Flask) -> None:
    client = app.test_client()
    login(client)
    # bound to a Huawei account already (otherwise isFirstLogin=true; see tests/test_web_platform.py)
    app.extensions["idp_bridge"].store.bindings.apply(x_user_id="cust-1001", bound=True, domain_id="d-1",
                                                     source="test", now=dt.datetime.now(dt.UTC))
    service = "https://console.huaweicloud.com/console/?region=cn-north-4#/home"
    resp = client.get("/go", query_string={"service": service})
    assert resp.status_code == 302
    loc = urlsplit(resp.headers["Location"])
    assert (loc.scheme, loc.netloc, loc.path) == ("https", "auth.huaweicloud.com", "/authui/saml/login")
    q = parse_qs(loc.query)
    assert q["xAccountType"] == ["partner-x"] and q["isFirstLogin"] == ["false"] and q["service"] == [service]
    # encodeURIComponent: '/', '?', '=', '#' are escaped; nothing is left raw
    assert "service=https%3A%2F%2Fconsole.huaweicloud.com%2Fconsole%2F%3Fregion%3Dcn-north-4%23%2Fhome" in loc.query


@pytest.mark.parametrize("service", [
    "https://evil.example/", "http://console.huaweicloud.com/", "https://console.huaweicloud.com.evil.example/",
    "https://user@evil.example@console.huaweicloud.com/", "javascript:alert(1)", "//evil.example/",
    "https://console.huaweicloud.com\\@evil.example/",
    # another port on a console host is another service; a port that is not a number is not a URL at all
    "https://console.huaweicloud.com:444/", "https://console.huaweicloud.com:8443/x", "https://console.huaweicloud.com:abc/",
    "https://console.huaweicloud.com:99999/", "https://console.huaweicloud.com:/", "https://[::1]:443/",
])
def test_go_refuses_service_off_the_allowlist(app: Flask, service: str, caplog: pytest.LogCaptureFixture) -> None:
    client = app.test_client()
    login(client)
    with caplog.at_level(logging.INFO, logger="idp_bridge"):
        resp = client.get("/go", query_string={"service": service})
    assert resp.status_code == 400
    assert "Location" not in resp.headers
    assert any("service_not_allowed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("sp", ["nosuch", "%ff", "huawei-cn\x00"])
def test_go_refuses_unknown_sp_with_400(app: Flask, sp: str, caplog: pytest.LogCaptureFixture) -> None:
    client = app.test_client()
    login(client)
    with caplog.at_level(logging.INFO, logger="idp_bridge"):
        resp = client.get("/go", query_string={"sp": sp})
    assert resp.status_code == 400 and "Location" not in resp.headers
    # a NUL is refused at the edge (web.validation) before the registry is asked
    assert any(("sp_unknown" in r.getMessage() or "input_control_character" in r.getMessage())
               and "huawei-cn" in r.getMessage() for r in caplog.records)


def test_go_sends_visitor_to_sign_in_then_continues(app: Flask) -> None:
    client = app.test_client()
    resp = client.get("/go", query_string={"service": "https://console.huaweicloud.com/"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    after = login(client)
    assert after.status_code == 302 and "/go?" in after.headers["Location"]
    final = client.get(after.headers["Location"])
    assert final.status_code == 302 and final.headers["Location"].startswith(
        "https://auth.huaweicloud.com/authui/saml/login?xAccountType=partner-x")


def test_metadata_etag_and_conditional_get(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/saml/metadata")
    assert first.mimetype == "application/samlmetadata+xml"
    again = client.get("/saml/metadata", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_pending_request_cannot_be_swapped_by_the_browser(app: Flask, env: Env) -> None:
    """The pending AuthnRequest lives server-side: the login form carries nothing a browser could change."""
    client = app.test_client()
    client.get("/saml/sso?" + env.redirect_query(env.authn_request(request_id="_pending-1")))
    form = client.get("/login").get_data(as_text=True)
    assert "_pending-1" not in form and "SAMLRequest" not in form and SP_ACS not in form
    login(client)
    page = client.get("/saml/continue")
    fields = extract_form(page.get_data(as_text=True))
    assert b'InResponseTo="_pending-1"' in base64.b64decode(fields["SAMLResponse"])
    assert client.get("/saml/continue").status_code == 400  # used once


# -- ForceAuthn and IsPassive ---------------------------------------------------------------------
def test_force_authn_asks_a_signed_in_customer_to_sign_in_again(app: Flask, env: Env) -> None:
    client = app.test_client()
    login(client)
    xml = env.authn_request(request_id="_force-1").replace(b'ForceAuthn="false"', b'ForceAuthn="true"')
    first = client.get("/saml/sso?" + env.redirect_query(xml))
    assert first.status_code == 302 and first.headers["Location"].endswith("/login")
    assert login(client).headers["Location"].endswith("/saml/continue")
    form = extract_form(client.get("/saml/continue").get_data(as_text=True))
    assert b'InResponseTo="_force-1"' in base64.b64decode(form["SAMLResponse"])


def test_is_passive_without_session_answers_no_passive(app: Flask, env: Env) -> None:
    client = app.test_client()
    metadata = client.get("/saml/metadata").data
    xml = env.authn_request(request_id="_passive-1").replace(b'IsPassive="false"', b'IsPassive="true"')
    page = client.get("/saml/sso?" + env.redirect_query(xml))
    assert page.status_code == 200
    form = extract_form(page.get_data(as_text=True))
    response_xml = base64.b64decode(form["SAMLResponse"])
    assert b"urn:oasis:names:tc:SAML:2.0:status:NoPassive" in response_xml and b"<saml:Assertion" not in response_xml
    (cert,) = metadata_certificate_b64(metadata)
    assert xmlsec1_verify(response_xml, cert, node="Response").returncode == 0
    ok, error, _ = python3_saml_validate(form["SAMLResponse"], idp_metadata_xml=metadata, request_id="_passive-1")
    assert not ok and error is not None and "NoPassive" in error
