"""The operator debug console at /_bridge/: off by default, its own password, CSRF, decoded exchanges with
rejection reasons, key ring, SPs, attribute preview and the simulator test login."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp_bridge.config import load_config, read_raw_config, write_raw_config
from idp_bridge.errors import ConfigError
from idp_bridge.store import Store
from idp_bridge.web import create_app
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, Env, extract_form, make_env

OPERATOR_PASSWORD = "operator-password-for-tests"


def _enable(env: Env, **debug: Any) -> None:
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["debug"] = debug
    write_raw_config(env.config.path, raw)


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    e = make_env(tmp_path / "bridge", db_url)
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email="c1001@partner.example", name="Cust 1001", mobile="0086-13800001001")
    store.dispose()
    return e


@pytest.fixture
def app(env: Env) -> Iterator[Flask]:
    _enable(env, enabled=True, password=OPERATOR_PASSWORD)
    app = create_app(env.config.path)
    app.config["TESTING"] = True
    yield app


def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token, page.get_data(as_text=True)
    return token.group(1)


def operator_login(client: FlaskClient) -> None:
    token = csrf(client, "/_bridge/login")
    resp = client.post("/_bridge/login", data={"password": OPERATOR_PASSWORD, "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/_bridge/")


def sso(client: FlaskClient, env: Env, request_id: str) -> dict[str, str]:
    query = env.redirect_query(env.authn_request(request_id=request_id))
    assert client.get("/saml/sso?" + query).status_code == 302
    token = csrf(client, "/login")
    client.post("/login", data={"user_id": "cust-1001", "password": PASSWORD, "csrf_token": token})
    page = client.get("/saml/continue")
    assert page.status_code == 200
    return extract_form(page.get_data(as_text=True))


def test_off_unless_enabled(env: Env) -> None:
    app = create_app(env.config.path)
    client = app.test_client()
    assert client.get("/_bridge/").status_code == 404
    assert client.get("/_bridge/login").status_code == 404
    sso(client, env, "_dbg-off")
    assert app.extensions["idp_bridge"].store.exchanges.recent(limit=10) == []  # nothing recorded while off


def test_enabled_without_a_password_refuses_to_start(env: Env) -> None:
    _enable(env, enabled=True)
    with pytest.raises(ConfigError) as err:
        load_config(env.config.path, environ={})
    assert err.value.code == "config_debug_password"
    loaded = load_config(env.config.path, environ={"IDP_BRIDGE_DEBUG_PASSWORD": OPERATOR_PASSWORD})
    assert loaded.debug.enabled and loaded.debug.password == OPERATOR_PASSWORD
    assert OPERATOR_PASSWORD not in repr(loaded.debug)


def test_operator_sign_in_password_and_csrf(app: Flask, env: Env) -> None:
    client = app.test_client()
    first = client.get("/_bridge/")
    assert first.status_code == 302 and first.headers["Location"].endswith("/_bridge/login")
    token = csrf(client, "/_bridge/login")
    assert client.post("/_bridge/login", data={"password": OPERATOR_PASSWORD}).status_code == 400  # no CSRF token
    wrong = client.post("/_bridge/login", data={"password": "not-it", "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong operator password" in wrong.get_data(as_text=True)
    assert client.get("/_bridge/").status_code == 302
    operator_login(client)
    page = client.get("/_bridge/")
    assert page.status_code == 200 and "SAML exchanges" in page.get_data(as_text=True)
    assert "Trust overview" in client.get("/_bridge/trust").get_data(as_text=True)
    assert app.test_client().get("/_bridge/trust").status_code == 302
    assert client.post("/_bridge/test-login", data={"user_id": "cust-1001"}).status_code == 400  # CSRF
    # a customer session is not an operator session
    other = app.test_client()
    sso(other, env, "_dbg-cust")
    assert other.get("/_bridge/").status_code == 302


def test_overview_shows_decoded_exchanges_redacted_with_rejection_reasons(app: Flask, env: Env) -> None:
    client = app.test_client()
    form = sso(client, env, "_dbg-1")
    xml = base64.b64decode(form["SAMLResponse"]).decode()
    signature_value = re.search(r"<ds:SignatureValue>([^<]+)</ds:SignatureValue>", xml)
    assert signature_value
    # a refused request: the same AuthnRequest ID again (replay)
    query = env.redirect_query(env.authn_request(request_id="_dbg-1"))
    assert client.get("/saml/sso?" + query).status_code == 400

    operator_login(client)
    page = client.get("/_bridge/").get_data(as_text=True)
    assert page.count('class="exchange"') >= 3  # request, response, refused request
    assert "AuthnRequest" in page and "Response" in page
    assert "<th>xUserId</th><td>cust-1001</td>" in page
    assert "<th>email</th><td>c1001@partner.example</td>" in page
    assert "_dbg-1" in page
    assert "[redacted]" in page
    assert signature_value.group(1)[:40] not in page  # signatures never shown
    assert "refused HTTP 400" in page and "request_replayed" in page  # the reason, from the audit trail
    trust = client.get("/_bridge/trust").get_data(as_text=True)
    ring = app.extensions["idp_bridge"].keys.ring()
    assert ring.active.key_id in trust and "active" in trust
    assert "https://auth.huaweicloud.com/" in trust and "loaded" in trust  # SP with metadata freshness


def test_attribute_preview_is_the_unsigned_assertion(app: Flask) -> None:
    client = app.test_client()
    operator_login(client)
    token = csrf(client, "/_bridge/preview")
    page = client.post("/_bridge/preview", data={"user_id": "cust-1001", "sp": "huawei-cn", "csrf_token": token})
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<th>xUserId</th><td>cust-1001</td>" in text and "<th>mobile</th><td>0086-13800001001</td>" in text
    assert "<th>bpId</th><td>bp-0001</td>" in text
    assertion = re.search(r'<pre id="assertion">(.*?)</pre>', text, re.S)
    assert assertion and "saml:Assertion" in assertion.group(1)
    assert "Signature" not in assertion.group(1)
    assert "https://auth.huaweicloud.com/" in assertion.group(1)  # audience
    unknown = client.post("/_bridge/preview", data={"user_id": "nobody", "sp": "huawei-cn", "csrf_token": token})
    assert "no local user" in unknown.get_data(as_text=True)


def test_test_login_runs_the_simulator_round_trip(app: Flask) -> None:
    client = app.test_client()
    operator_login(client)
    token = csrf(client, "/_bridge/")
    page = client.post("/_bridge/test-login", data={"user_id": "cust-1001", "site": "intl", "csrf_token": token})
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="verdict">passed' in text, text
    assert "assertion_signature" in text and "audience" in text
    assert "<th>xUserId</th><td>cust-1001</td>" in text


def test_console_shows_exchanges_from_every_worker(app: Flask, env: Env) -> None:
    """Two app instances (two workers) share the database: one records, the other's console shows it."""
    other_worker = create_app(env.config.path)
    sso(other_worker.test_client(), env, "_dbg-other-worker")
    client = app.test_client()
    operator_login(client)
    page = client.get("/_bridge/").get_data(as_text=True)
    assert "_dbg-other-worker" in page


def test_exchange_ring_is_bounded(env: Env) -> None:
    _enable(env, enabled=True, password=OPERATOR_PASSWORD, max_exchanges=3)
    app = create_app(env.config.path)
    for i in range(3):
        sso(app.test_client(), env, f"_dbg-ring-{i}")
    kept = app.extensions["idp_bridge"].store.exchanges.recent(limit=100)
    assert len(kept) == 3
    assert kept[0]["summary"]["InResponseTo"] == "_dbg-ring-2"


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr class="exchange">(.*?)\n  </tr>', page, re.S)


def test_exchanges_search_by_correlation_id_sp_and_outcome_with_paging(env: Env) -> None:
    _enable(env, enabled=True, password=OPERATOR_PASSWORD, max_exchanges=500)
    app = create_app(env.config.path)
    for i in range(12):  # 12 requests + 12 responses = 24 exchanges: two pages of 20
        sso(app.test_client(), env, f"_dbg-page-{i:02d}")
    replay = app.test_client().get("/saml/sso?" + env.redirect_query(env.authn_request(request_id="_dbg-page-03")))
    assert replay.status_code == 400
    refused_cid = replay.headers["X-Correlation-Id"]
    client = app.test_client()
    operator_login(client)

    first = client.get("/_bridge/").get_data(as_text=True)
    assert len(_rows(first)) == 20 and "1–20 of 25" in first and 'id="next-page"' in first
    assert 'id="prev-page"' not in first
    second = client.get("/_bridge/?page=2").get_data(as_text=True)
    assert len(_rows(second)) == 5 and "21–25 of 25" in second and 'id="next-page"' not in second
    assert "_dbg-page-00" in second and "_dbg-page-00" not in first  # newest first
    assert len(_rows(client.get("/_bridge/?page=99").get_data(as_text=True))) == 5  # clamped to the last page
    assert len(_rows(client.get("/_bridge/?page=x").get_data(as_text=True))) == 20

    by_cid = client.get(f"/_bridge/?q={refused_cid}").get_data(as_text=True)
    assert len(_rows(by_cid)) == 1 and "request_replayed" in by_cid and "page-reused" in by_cid
    rejections = re.search(r'<table id="rejections">(.*?)</table>', by_cid, re.S)
    assert rejections and rejections.group(1).count("<tr><td>") == 1  # narrowed to that id as well
    by_request_id = _rows(client.get("/_bridge/?q=_dbg-page-07").get_data(as_text=True))
    assert len(by_request_id) == 2  # the AuthnRequest (ID) and its Response (InResponseTo)
    refused = _rows(client.get("/_bridge/?outcome=refused").get_data(as_text=True))
    assert len(refused) == 1 and refused_cid in refused[0]
    accepted = client.get("/_bridge/?outcome=ok&sp=huawei-cn").get_data(as_text=True)
    assert "1–20 of 24" in accepted
    assert not _rows(client.get("/_bridge/?sp=no-such-sp").get_data(as_text=True))
    nothing = client.get("/_bridge/?q=zzz-nothing").get_data(as_text=True)
    assert 'id="no-exchanges"' in nothing and "No exchanges match." in nothing


def test_metadata_download_and_fingerprints(app: Flask) -> None:
    client = app.test_client()
    operator_login(client)
    store = app.extensions["idp_bridge"].store
    before = len(store.keyring.metadata_fetches())
    resp = client.get("/_bridge/metadata.xml")
    assert resp.status_code == 200 and resp.headers["Content-Disposition"] == 'attachment; filename="IDP Metadata.xml"'
    assert resp.data == app.extensions["idp_bridge"].metadata().xml
    assert len(store.keyring.metadata_fetches()) == before  # an operator's download is no evidence of Huawei's
    page = client.get("/_bridge/trust").get_data(as_text=True)
    active = app.extensions["idp_bridge"].keys.ring().active
    assert f'data-copy="{active.fingerprint}"' in page
    assert app.test_client().get("/_bridge/metadata.xml").status_code == 302  # operators only


def test_sp_metadata_refresh(app: Flask, env: Env) -> None:
    client = app.test_client()
    operator_login(client)
    token = csrf(client, "/_bridge/")
    assert client.post("/_bridge/sp/huawei-cn/refresh").status_code == 400  # CSRF
    b = app.extensions["idp_bridge"]
    loaded_before = b.sps.get("huawei-cn").loaded_at
    resp = client.post("/_bridge/sp/huawei-cn/refresh", data={"csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/_bridge/trust#sps-section")
    assert b.sps.get("huawei-cn").loaded_at > loaded_before
    page = client.get("/_bridge/trust").get_data(as_text=True)
    assert 'id="notice"' in page and "Metadata of huawei-cn reloaded" in page
    assert 'id="notice"' not in client.get("/_bridge/trust").get_data(as_text=True)  # shown once
    # a broken file: the operator is told, the previous copy stays in use
    meta = Path(env.config.sp("huawei-cn").metadata)
    meta.write_text("<not-metadata/>")
    client.post("/_bridge/sp/huawei-cn/refresh", data={"csrf_token": token})
    page = client.get("/_bridge/trust").get_data(as_text=True)
    assert "could not be reloaded; the previous copy stays in use" in page
    assert b.sps.get("huawei-cn").loaded_at > loaded_before  # still the good copy, usable
    events = [e for e in b.store.audit.recent(10) if e.event == "debug_sp_refresh"]
    assert [e.outcome for e in events][:2] == ["refused", "ok"]
    assert client.post("/_bridge/sp/nope/refresh", data={"csrf_token": token}).status_code == 302
