"""No login CSRF through the hand-off (issue 8 item 2), through the Flask app on SQLite and PostgreSQL.

A link carrying customer X's unused token, opened in a browser signed in as Y, must never silently make it
X: it gets a confirmation page naming both (409) and only a same-session, CSRF-protected POST switches.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.store import Store
from idp_bridge.web import create_app
from idp_bridge.web import handoff as handoff_module
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import Env
from tests.platform_env import mint, platform_env

SERVICE = "https://console.huaweicloud.com/"
VICTIM, ATTACKER = "victim-y", "attacker-x"


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return platform_env(tmp_path / "bridge", db_url)


@pytest.fixture
def app(env: Env) -> Iterator[Flask]:
    store = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    application = create_app(bridge=IdentityProvider(env.config, store))
    yield application
    store.dispose()


def store_of(app: Flask) -> Store:
    s: Store = app.extensions["idp_bridge"].store
    return s


def signed_in_as(client: FlaskClient) -> str | None:
    page = client.get("/").get_data(as_text=True)
    m = re.search(r'<span class="muted">\(([^)]+)\)</span>', page)
    return m.group(1) if m and 'id="customer"' in page else None


def victim(app: Flask, env: Env) -> FlaskClient:
    client = app.test_client()
    assert client.get("/go", query_string={"token": mint(env, VICTIM), "service": SERVICE}).status_code == 302
    assert signed_in_as(client) == VICTIM
    return client


def form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))


@pytest.mark.parametrize("path", ["/go", "/handoff"])
def test_someone_elses_token_does_not_switch_the_signed_in_customer(app: Flask, env: Env, path: str) -> None:
    client = victim(app, env)
    token = mint(env, ATTACKER, name="Mallory")
    resp = client.get(path, query_string={"token": token, "service": SERVICE, "next": "/go?service=" + SERVICE})
    assert resp.status_code == 409 and "Location" not in resp.headers  # before the fix: 302, signed in as X
    page = resp.get_data(as_text=True)
    assert VICTIM in page and ATTACKER in page and "Mallory" in page and "csrf_token" in page
    assert signed_in_as(client) == VICTIM
    event = store_of(app).audit.recent(1)[0]
    assert (event.event, event.outcome, event.reason_code, event.customer) == (
        "handoff", "refused", "identity_switch_held", ATTACKER)
    assert event.detail and event.detail["signed_in"] == VICTIM
    # the next console jump is still the victim's own (a fresh /go, no token)
    jump = client.get("/go", query_string={"service": SERVICE})
    assert jump.status_code == 302 and jump.headers["Location"].startswith("https://auth.huaweicloud.com/")
    assert signed_in_as(client) == VICTIM
    # the token was spent on the held switch: it cannot be replayed elsewhere
    assert app.test_client().get(path, query_string={"token": token}).status_code == 400


def test_confirm_needs_this_sessions_csrf_token_and_nonce(app: Flask, env: Env) -> None:
    client = victim(app, env)
    page = client.get("/go", query_string={"token": mint(env, ATTACKER), "service": SERVICE}).get_data(as_text=True)
    fields = form_fields(page)
    assert set(fields) == {"csrf_token", "nonce"}
    # a cross-site form: no CSRF token, or the attacker's own session's token
    attacker = app.test_client()
    attacker.get("/go", query_string={"token": mint(env, ATTACKER), "service": SERVICE})
    attacker_csrf = form_fields(attacker.get("/").get_data(as_text=True))["csrf_token"]
    for forged in ({"choice": "switch", "nonce": fields["nonce"]},
                   {"choice": "switch", "nonce": fields["nonce"], "csrf_token": attacker_csrf},
                   {"choice": "switch", "nonce": "guessed", "csrf_token": fields["csrf_token"]},
                   {"choice": "switch", "csrf_token": fields["csrf_token"]}):
        resp = client.post("/handoff/confirm", data=forged)
        assert resp.status_code == 400 and "Location" not in resp.headers
        assert signed_in_as(client) == VICTIM
    # the wrong nonce used the held switch up: even the right form is now refused
    assert client.post("/handoff/confirm", data=dict(fields, choice="switch")).status_code == 400
    assert signed_in_as(client) == VICTIM


def test_the_customer_may_knowingly_switch(app: Flask, env: Env) -> None:
    client = victim(app, env)
    page = client.get("/go", query_string={"token": mint(env, ATTACKER), "service": SERVICE}).get_data(as_text=True)
    resp = client.post("/handoff/confirm", data=dict(form_fields(page), choice="switch"))
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/go?")
    assert signed_in_as(client) == ATTACKER
    final = client.get(resp.headers["Location"])
    assert final.status_code == 302 and parse_qs(urlsplit(final.headers["Location"]).query)["service"] == [SERVICE]
    event = [e for e in store_of(app).audit.recent(5) if e.event == "handoff"][0]
    assert (event.outcome, event.reason_code, event.customer) == ("ok", "identity_switch_confirmed", ATTACKER)
    assert event.detail and event.detail["previous"] == VICTIM


def test_staying_drops_the_held_switch(app: Flask, env: Env) -> None:
    client = victim(app, env)
    page = client.get("/handoff", query_string={"token": mint(env, ATTACKER)}).get_data(as_text=True)
    fields = form_fields(page)
    resp = client.post("/handoff/confirm", data=dict(fields, choice="stay"))
    assert resp.status_code == 303 and signed_in_as(client) == VICTIM
    assert client.post("/handoff/confirm", data=dict(fields, choice="switch")).status_code == 400
    assert signed_in_as(client) == VICTIM


def test_an_expired_held_switch_is_refused(app: Flask, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handoff_module, "SWITCH_TTL", dt.timedelta(seconds=-1))
    client = victim(app, env)
    page = client.get("/handoff", query_string={"token": mint(env, ATTACKER)}).get_data(as_text=True)
    assert client.post("/handoff/confirm", data=dict(form_fields(page), choice="switch")).status_code == 400
    assert signed_in_as(client) == VICTIM
    assert store_of(app).audit.recent(1)[0].reason_code == "handoff_switch_expired"


def test_honest_flows_are_unchanged(app: Flask, env: Env) -> None:
    fresh = app.test_client()  # no session: the token signs in and jumps in one step
    resp = fresh.get("/go", query_string={"token": mint(env, VICTIM), "service": SERVICE})
    assert resp.status_code == 302 and signed_in_as(fresh) == VICTIM
    again = fresh.get("/go", query_string={"token": mint(env, VICTIM), "service": SERVICE})  # same customer
    assert again.status_code == 302 and again.headers["Location"].startswith("https://auth.huaweicloud.com/")
    back = fresh.get("/handoff", query_string={"token": mint(env, VICTIM), "next": "/"})
    assert back.status_code == 302 and signed_in_as(fresh) == VICTIM
    # after signing out, another customer's token signs in normally (nobody to switch from)
    csrf = form_fields(fresh.get("/").get_data(as_text=True))["csrf_token"]
    assert fresh.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert fresh.get("/go", query_string={"token": mint(env, ATTACKER), "service": SERVICE}).status_code == 302
    assert signed_in_as(fresh) == ATTACKER
