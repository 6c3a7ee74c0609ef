"""/metrics: off unless enabled, then only for the token or an allowed address; counts logins and refusals,
times SSO and signing, and reads key expiry and the webhook outbox at scrape time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from idp_bridge.config import load_config, read_raw_config, write_raw_config
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.store import Store
from idp_bridge.web import create_app
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, Env, make_env

TOKEN = "m" * 40


def _configure(env: Env, **metrics: Any) -> None:
    path = env.config.path
    assert path is not None
    raw = read_raw_config(path)
    raw["metrics"] = metrics
    write_raw_config(path, raw)
    env.config = load_config(path, environ={})


def _app(env: Env) -> Iterator[Flask]:
    store = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    if store.users.get("cust-1001") is None:
        store.users.add("cust-1001", PASSWORD, email="c1001@partner.example", name="Wang Fang")
    app = create_app(bridge=IdentityProvider(env.config, store))
    app.testing = False
    yield app
    store.dispose()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return make_env(tmp_path / "bridge", db_url)


def test_metrics_are_not_public_by_default(env: Env) -> None:
    for app in _app(env):
        assert app.test_client().get("/metrics").status_code == 404


def test_only_the_token_or_an_allowed_address_may_scrape(env: Env) -> None:
    _configure(env, enabled=True, token=TOKEN, allow=["192.0.2.0/24"])
    for app in _app(env):
        client = app.test_client()
        assert client.get("/metrics").status_code == 403  # 127.0.0.1 is not in allow
        assert client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40}).status_code == 403
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("text/plain")
        assert client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 200


def test_logins_refusals_latency_and_state(env: Env) -> None:
    _configure(env, enabled=True)
    for app in _app(env):
        client = app.test_client()
        before = client.get("/metrics").get_data(as_text=True)
        assert client.get("/saml/sso?SAMLRequest=%%%").status_code == 400  # one refusal
        first = client.get("/saml/sso?" + env.redirect_query(env.authn_request()))
        assert first.status_code == 302
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
        assert token
        client.post("/login", data={"user_id": "cust-1001", "password": PASSWORD, "csrf_token": token.group(1)})
        assert 'name="SAMLResponse"' in client.get("/saml/continue").get_data(as_text=True)
        after = client.get("/metrics").get_data(as_text=True)
        sp = env.config.service_providers[0].name
        assert value(after, "idp_bridge_logins_total", sp=sp) == value(before, "idp_bridge_logins_total", sp=sp) + 1
        refused = [k for k, v in samples(after).items() if k[0] == "idp_bridge_refusals_total"
                   and v > samples(before).get(k, 0.0)]
        assert refused, "the refused request is counted by its code"
        assert value(after, "idp_bridge_sso_seconds_count") >= value(before, "idp_bridge_sso_seconds_count") + 2
        assert value(after, "idp_bridge_signing_seconds_count") >= value(before, "idp_bridge_signing_seconds_count") + 1
        expiry = [v for (name, _), v in samples(after).items() if name == "idp_bridge_key_expiry_days"]
        assert expiry and 300 < expiry[0] < 3700
        assert value(after, "idp_bridge_webhook_outbox_depth") == 0
        assert value(after, "idp_bridge_database_up") == 1


@pytest.mark.slow
def test_counters_add_up_across_two_gunicorn_workers(tmp_path: Path, db_url: str) -> None:
    """The shipped gunicorn config, 2 workers: N logins spread over both workers show as N in one scrape."""
    import requests

    from tests.servers import ServerProcess, free_port, gunicorn_cmd, wait_http
    from tests.test_server_journey import sign_in

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = make_env(tmp_path / "bridge", db_url, base_url=base)
    _configure(env, enabled=True)
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-1001", PASSWORD, email="c1001@partner.example")
    store.dispose()
    logins = 8
    with ServerProcess(gunicorn_cmd(port, workers=2), env={"IDP_BRIDGE_CONFIG": str(env.config.path),
                                                          "PROMETHEUS_MULTIPROC_DIR": ""}) as server:
        wait_http(base + "/healthz", proc=server.proc)
        for i in range(logins):
            http = requests.Session()
            query = env.redirect_query(env.authn_request(request_id=f"_metrics-{i}"))
            assert http.get(base + "/saml/sso?" + query, allow_redirects=False, timeout=10).status_code == 302
            assert sign_in(http, base, "cust-1001", PASSWORD).status_code == 302
            page = http.get(base + "/saml/continue", timeout=10)
            assert 'name="SAMLResponse"' in page.text
            assert requests.get(base + "/saml/sso?SAMLRequest=%%", timeout=10).status_code == 400
        for _ in range(20):  # the scrape itself may land on either worker: it must always say the same
            text = requests.get(base + "/metrics", timeout=10).text
            sp = env.config.service_providers[0].name
            assert value(text, "idp_bridge_logins_total", sp=sp) == logins
            assert sum(v for (name, _), v in samples(text).items() if name == "idp_bridge_refusals_total") == logins
        assert value(text, "idp_bridge_sso_seconds_count") >= 2 * logins
