"""Strict where SAML is strict, through the real web layer (issue 8.6): a NameIDPolicy we cannot satisfy is
answered with a signed InvalidNameIDPolicy Response at the ACS (judged by xmlsec1 and python3-saml strict);
a tricked Issuer and a signed request without Destination are refused; a pending login older than
``saml.pending_login_max_age_seconds`` is not answered. The honest flow still yields an Assertion."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from lxml import etree

from idp_bridge.config import load_config
from idp_bridge.huawei.attributes import Customer
from idp_bridge.idp.identity_provider import AnsweredRefusal, IdentityProvider
from idp_bridge.saml.errors import RequestError
from idp_bridge.saml.xml import NS_SAML, NS_SAMLP, STATUS_INVALID_NAMEID_POLICY
from idp_bridge.store import Store
from idp_bridge.web import create_app
from idp_bridge.web.sessions import COOKIE_NAME
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import (
    PASSWORD,
    SP_ACS,
    SP_ENTITY_ID,
    Env,
    extract_form,
    make_env,
    metadata_certificate_b64,
    python3_saml_validate,
    xmlsec1_verify,
)
from tests.test_web_sso import login, run_sso

STATUS_REQUESTER = "urn:oasis:names:tc:SAML:2.0:status:Requester"


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return make_env(tmp_path / "bridge", db_url)


def _app(env: Env, **saml: int) -> Iterator[Flask]:
    config = env.config
    if saml:
        config = dataclasses.replace(config, saml=dataclasses.replace(config.saml, **saml))
    store = Store.from_url(config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email="c1001@partner.example", name="Wang Fang")
    application = create_app(bridge=IdentityProvider(config, store))
    application.testing = False
    yield application
    store.dispose()


@pytest.fixture
def app(env: Env) -> Iterator[Flask]:
    yield from _app(env)


def _persistent(env: Env, request_id: str) -> bytes:
    return env.authn_request(request_id=request_id).replace(b"nameid-format:transient", b"nameid-format:persistent")


@pytest.mark.parametrize("signed_in", [False, True])
def test_unsatisfiable_nameid_policy_is_answered_with_a_signed_invalid_nameid_policy_response(
        app: Flask, env: Env, signed_in: bool, caplog: pytest.LogCaptureFixture) -> None:
    client = app.test_client()
    if signed_in:
        login(client)
    metadata = client.get("/saml/metadata").data
    query = env.redirect_query(_persistent(env, "_nip-1"), relay_state="rs-nip")
    with caplog.at_level(logging.INFO, logger="idp_bridge"):
        page = client.get("/saml/sso?" + query)
    assert page.status_code == 200, page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    form = extract_form(page.get_data(as_text=True))
    assert form["action"] == SP_ACS and form["RelayState"] == "rs-nip"
    xml = base64.b64decode(form["SAMLResponse"])
    root = etree.fromstring(xml)
    code = root.find(f"{{{NS_SAMLP}}}Status/{{{NS_SAMLP}}}StatusCode")
    assert code is not None and code.get("Value") == STATUS_REQUESTER
    assert code[0].get("Value") == STATUS_INVALID_NAMEID_POLICY
    assert root.get("InResponseTo") == "_nip-1" and root.get("Destination") == SP_ACS
    assert root.find(f".//{{{NS_SAML}}}Assertion") is None and b"cust-1001" not in xml  # no identity, ever
    (cert,) = metadata_certificate_b64(metadata)
    assert xmlsec1_verify(xml, cert, node="Response").returncode == 0
    ok, error, _ = python3_saml_validate(form["SAMLResponse"], idp_metadata_xml=metadata, request_id="_nip-1")
    assert not ok and error is not None and "InvalidNameIDPolicy" in error
    assert any("invalid_name_id_policy" in r.getMessage() for r in caplog.records)
    # nothing is left pending, and the same request is not answered twice
    assert client.get("/saml/continue").status_code == 400
    again = app.test_client().get("/saml/sso?" + query)
    assert again.status_code == 400 and "SAMLResponse" not in again.get_data(as_text=True)


def test_unspecified_nameid_policy_is_the_honest_flow(app: Flask, env: Env) -> None:
    xml = env.authn_request(request_id="_unspec-1").replace(
        b"urn:oasis:names:tc:SAML:2.0:nameid-format:transient", b"urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified")
    form = run_sso(app.test_client(), env, env.redirect_query(xml))
    metadata = app.test_client().get("/saml/metadata").data
    ok, error, attrs = python3_saml_validate(form["SAMLResponse"], idp_metadata_xml=metadata, request_id="_unspec-1")
    assert ok, error
    assert attrs["xUserId"] == ["cust-1001"]


ISSUER = f">{SP_ENTITY_ID}</saml2:Issuer>".encode()
REFUSED: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "issuer_with_comment": (lambda x: x.replace(ISSUER, f">{SP_ENTITY_ID}<!---->.evil</saml2:Issuer>".encode()),
                            "issuer_malformed"),
    "issuer_padded": (lambda x: x.replace(ISSUER, f"> {SP_ENTITY_ID}</saml2:Issuer>".encode()), "unknown_issuer"),
    "signed_without_destination": (lambda x: x.replace(b' Destination="http://127.0.0.1:5000/saml/sso"', b""),
                                   "destination_missing"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_strict_refusals_through_the_web(app: Flask, env: Env, case: str, caplog: pytest.LogCaptureFixture) -> None:
    change, code = REFUSED[case]
    honest = env.authn_request(request_id="_strict-" + case)
    xml = change(honest)
    assert xml != honest  # the hostile change applied
    client = app.test_client()
    login(client)  # even a signed-in customer gets no Response
    with caplog.at_level(logging.INFO, logger="idp_bridge"):
        resp = client.get("/saml/sso?" + env.redirect_query(xml))
    body = resp.get_data(as_text=True)
    assert resp.status_code == 400, body
    assert "SAMLResponse" not in body and code not in body
    assert any(code in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def _age_pending(client: object, minutes: float) -> None:
    with client.session_transaction() as sess:  # type: ignore[attr-defined]
        pending = dict(sess["pending"])
        received = dt.datetime.fromisoformat(pending["received_at"]) - dt.timedelta(minutes=minutes)
        pending["received_at"] = received.isoformat()
        sess["pending"] = pending


def test_a_pending_login_older_than_ten_minutes_is_not_answered(app: Flask, env: Env,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    client = app.test_client()
    first = client.get("/saml/sso?" + env.redirect_query(env.authn_request(request_id="_old-1")))
    assert first.status_code == 302 and first.headers["Location"].endswith("/login")
    _age_pending(client, 10.5)
    assert login(client).headers["Location"].endswith("/saml/continue")
    with caplog.at_level(logging.INFO, logger="idp_bridge"):
        page = client.get("/saml/continue")
    assert page.status_code == 400 and "SAMLResponse" not in page.get_data(as_text=True)
    assert any("pending_login_expired" in r.getMessage() and "_old-1" in r.getMessage() for r in caplog.records)
    assert client.get("/saml/continue").status_code == 400  # dropped: never answered later either
    assert client.get_cookie(COOKIE_NAME) is not None  # the customer's own sign-in is untouched


def test_a_pending_login_younger_than_the_limit_is_answered(app: Flask, env: Env) -> None:
    client = app.test_client()
    client.get("/saml/sso?" + env.redirect_query(env.authn_request(request_id="_young-1")))
    _age_pending(client, 9.5)
    login(client)
    form = extract_form(client.get("/saml/continue").get_data(as_text=True))
    assert b'InResponseTo="_young-1"' in base64.b64decode(form["SAMLResponse"])


def test_the_pending_login_age_is_configurable(env: Env) -> None:
    for application in _app(env, pending_login_max_age_seconds=1800):
        client = application.test_client()
        client.get("/saml/sso?" + env.redirect_query(env.authn_request(request_id="_cfg-1")))
        _age_pending(client, 20)
        login(client)
        form = extract_form(client.get("/saml/continue").get_data(as_text=True))
        assert b'InResponseTo="_cfg-1"' in base64.b64decode(form["SAMLResponse"])
    assert env.config.path is not None
    text = env.config.path.read_text() + "\n[saml]\npending_login_max_age_seconds = 120\n"
    env.config.path.write_text(text)
    assert load_config(env.config.path, environ={}).saml.pending_login_max_age_seconds == 120


def test_identity_provider_refuses_old_pending_logins_and_answers_nameid_policy(env: Env) -> None:
    store = Store.from_url(env.config.database_url)
    try:
        idp = IdentityProvider(env.config, store)
        t0 = dt.datetime.now(dt.UTC)
        pending = idp.accept_redirect_request(env.redirect_query(env.authn_request(request_id="_idp-1", now=t0)),
                                              now=t0)
        customer = Customer(user_id="cust-9")
        idp.issue_response(pending, customer, authn_instant=t0, session_index="_s", now=t0 + dt.timedelta(minutes=9))
        for late in (idp.issue_response, idp.issue_no_passive):
            with pytest.raises(RequestError) as exc:
                if late is idp.issue_response:
                    idp.issue_response(pending, customer, authn_instant=t0, session_index="_s",
                                       now=t0 + dt.timedelta(minutes=10, seconds=1))
                else:
                    idp.issue_no_passive(pending, now=t0 + dt.timedelta(minutes=10, seconds=1))
            assert exc.value.code == "pending_login_expired"
        with pytest.raises(AnsweredRefusal) as refused:
            idp.accept_redirect_request(env.redirect_query(_persistent(env, "_idp-2")))
        assert refused.value.code == "invalid_name_id_policy" and refused.value.form.action == SP_ACS
        assert refused.value.pending.request_id == "_idp-2"
    finally:
        store.dispose()
