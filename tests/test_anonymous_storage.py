"""Anonymous traffic cannot grow storage without bound, and an SSO round trip writes once.

10,000 anonymous requests (sign-in pages, metadata fetches, refused SSO requests, forged posts, console
jumps, health checks) leave every table within a bound that does not depend on the number of requests;
a logged-in SSO commits its replay claim and audit row in one transaction and does not rewrite an
unchanged session; retention purges old audit rows and metadata fetches.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, func, select, text

from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.ops.audit import REFUSALS_PER_MINUTE
from idp_bridge.store import Store
from idp_bridge.store.tables import AuditEventRow, MetadataFetchRow, metadata
from idp_bridge.web import create_app
from idp_bridge.web.sessions import COOKIE_NAME, PRE_COOKIE_NAME
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import PASSWORD, Env, extract_form, make_env, python3_saml_validate

REQUESTS = 10_000


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return make_env(tmp_path / "bridge", db_url)


@pytest.fixture
def store(env: Env) -> Iterator[Store]:
    s = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    s.users.add("cust-1001", PASSWORD, email="c1001@partner.example", name="Wang Fang")
    yield s
    s.dispose()


@pytest.fixture
def app(env: Env, store: Store) -> Flask:
    application = create_app(bridge=IdentityProvider(env.config, store))
    application.testing = False
    return application


def row_counts(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in metadata.sorted_tables}


def csrf_of(client: FlaskClient) -> str:
    page = client.get("/login").get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_ten_thousand_anonymous_requests_leave_storage_bounded(app: Flask, store: Store, env: Env) -> None:
    before = row_counts(store)
    started = dt.datetime.now(dt.UTC)
    anonymous = app.test_client(use_cookies=False)
    browser = app.test_client()  # one visitor keeping its cookies: pre-login cookie and CSRF token
    token = csrf_of(browser)
    signed = env.redirect_query(env.authn_request())
    statuses: dict[int, int] = {}
    for i in range(REQUESTS):
        kind = i % 10
        if kind == 0:
            resp = anonymous.get("/login")
        elif kind == 1:
            resp = anonymous.get(f"/saml/metadata?sp={'huawei-cn' if i % 20 else 'nope'}")
        elif kind == 2:
            resp = anonymous.get(f"/saml/sso?SAMLRequest=garbage{i}")
        elif kind == 3:
            resp = anonymous.post("/login", data={"user_id": f"u{i}", "password": "x", "csrf_token": "forged"})
        elif kind == 4:
            resp = browser.post("/login", data={"user_id": f"guess{i}", "password": "wrong", "csrf_token": token})
        elif kind == 5:
            resp = anonymous.get("/go?sp=huawei-cn")
        elif kind == 6:
            resp = anonymous.get("/saml/continue")
        elif kind == 7:
            resp = anonymous.get("/saml/sso?" + signed if i > 7 else "/healthz")  # a replayed signed request
        elif kind == 8:
            resp = browser.get("/go?sp=huawei-cn")
        else:
            resp = anonymous.get("/healthz")
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, (i, resp.status_code)
    after = row_counts(store)
    grown = {name: after[name] - before[name] for name in after}
    minutes = int((dt.datetime.now(dt.UTC) - started).total_seconds() // 60) + 2  # clock minutes touched
    with store.engine.connect() as conn:
        kinds = conn.execute(select(func.count(func.distinct(AuditEventRow.reason_code)))).scalar_one()
    # The one signed request above was honest once: it waits for a sign-in in one session row.
    assert grown["sessions"] <= 1, grown
    assert grown["replay_ids"] <= 1, grown
    assert grown["metadata_fetches"] <= 10 * minutes + 2, grown  # unlisted fetchers: 10 a minute
    assert kinds <= 12, kinds  # reasons are stable codes, not values an attacker chooses
    assert grown["audit_events"] <= kinds * (REFUSALS_PER_MINUTE + 1) * minutes, (grown, kinds, minutes)
    assert grown["login_throttle"] <= 50, grown
    assert grown["debug_exchanges"] == 0 and grown["outbox"] == 0 and grown["bindings"] == 0, grown
    assert grown["users"] == 0 and grown["key_publications"] == 0, grown
    assert sum(grown.values()) < REQUESTS / 10, grown
    assert statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0, statuses
    # What was left out of the database is still counted there (a summary row once its minute is over, so
    # only when the run crossed a minute boundary), and every refusal is in the log.
    ended = dt.datetime.now(dt.UTC)
    if ended.replace(second=0, microsecond=0) > started.replace(second=0, microsecond=0) + dt.timedelta(minutes=1):
        rows = store.audit.recent(10_000)
        assert any(e.detail and e.detail.get("suppressed") for e in rows)


def test_pre_login_state_lives_in_a_signed_cookie_until_sign_in(app: Flask, store: Store) -> None:
    client = app.test_client()
    token = csrf_of(client)
    assert client.get_cookie(PRE_COOKIE_NAME) is not None
    assert client.get_cookie(COOKIE_NAME) is None
    assert row_counts(store)["sessions"] == 0
    # A forged pre-login cookie is ignored: its CSRF token does not count.
    forger = app.test_client()
    forger.set_cookie(PRE_COOKIE_NAME, client.get_cookie(PRE_COOKIE_NAME).value[:-2] + "xx")  # type: ignore[union-attr]
    assert forger.post("/login", data={"user_id": "cust-1001", "password": PASSWORD,
                                       "csrf_token": token}).status_code == 400
    resp = client.post("/login", data={"user_id": "cust-1001", "password": PASSWORD, "csrf_token": token})
    assert resp.status_code == 302
    assert client.get_cookie(COOKIE_NAME) is not None
    assert client.get_cookie(PRE_COOKIE_NAME) is None  # deleted at sign-in
    assert row_counts(store)["sessions"] == 1


class StatementLog:
    """Every statement the database driver sends, and every commit (the thing measured, not mocked), seen at
    the driver: the per-request statements bypass SQLAlchemy (store/driver.py), so its events miss them.
    SQLite: each connection's trace callback; PostgreSQL: psycopg's cursor execute and connection commit."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        self.commits = 0
        store.engine.dispose()  # connections opened from now on are traced from their first statement
        if store.dialect == "sqlite":
            event.listen(store.engine, "connect", lambda dbapi, _rec: dbapi.set_trace_callback(self._sent))
            return
        import psycopg

        execute, commit = psycopg.Cursor.execute, psycopg.Connection.commit

        def traced_execute(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            self._sent(str(query))
            return execute(cursor, query, *args, **kwargs)

        def traced_commit(conn: Any) -> None:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.commits += 1
            commit(conn)

        monkeypatch.setattr(psycopg.Cursor, "execute", traced_execute)
        monkeypatch.setattr(psycopg.Connection, "commit", traced_commit)

    def _sent(self, statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            self.commits += 1
        else:
            self.statements.append(statement)

    @property
    def writes(self) -> list[str]:
        return [s.split("(")[0].strip() for s in self.statements
                if s.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")]


def test_logged_in_sso_is_one_read_and_one_write_transaction(app: Flask, store: Store, env: Env,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    client = app.test_client()
    token = csrf_of(client)
    client.post("/login", data={"user_id": "cust-1001", "password": PASSWORD, "csrf_token": token})
    app.extensions["idp_bridge"].keys.ring()  # the key ring is loaded: its periodic reload is not the SSO's cost
    sessions_before = row_counts(store)["sessions"]
    log = StatementLog(store, monkeypatch)
    request_id = "_one-transaction-" + "a" * 16
    resp = client.get("/saml/sso?" + env.redirect_query(env.authn_request(request_id=request_id)))
    assert resp.status_code == 200
    sso_commits, sso_statements, sso_writes = log.commits, list(log.statements), log.writes
    form = extract_form(resp.get_data(as_text=True))
    ok, error, _ = python3_saml_validate(form["SAMLResponse"], idp_metadata_xml=client.get("/saml/metadata").data,
                                         request_id=request_id)
    assert ok, error
    assert sso_commits == 1, sso_statements  # one write transaction (claim + audit) ...
    assert [s for s in sso_statements if "FROM sessions" in s and s.startswith("SELECT")], sso_statements
    assert len(sso_statements) == len(sso_writes) + 1 + (store.dialect == "sqlite"), sso_statements  # ... + the
    # session read, alone (no BEGIN/COMMIT around it); SQLite sends BEGIN IMMEDIATE itself
    assert len([w for w in sso_writes if w.startswith("INSERT INTO replay_ids")]) == 1, sso_writes
    assert len([w for w in sso_writes if w.startswith("INSERT INTO audit_events")]) == 1, sso_writes
    assert not [w for w in sso_writes if "sessions" in w], sso_writes  # nothing changed in the session
    assert row_counts(store)["sessions"] == sessions_before


def test_sso_claim_and_audit_commit_together(app: Flask, store: Store, env: Env,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    client = app.test_client()
    token = csrf_of(client)
    client.post("/login", data={"user_id": "cust-1001", "password": PASSWORD, "csrf_token": token})
    app.extensions["idp_bridge"].keys.ring()
    log = StatementLog(store, monkeypatch)
    query = env.redirect_query(env.authn_request())
    assert client.get("/saml/sso?" + query).status_code == 200
    writes_in_one = log.commits
    with store.engine.connect() as conn:
        logins = conn.execute(select(func.count()).select_from(AuditEventRow)
                              .where(AuditEventRow.event == "login", AuditEventRow.outcome == "ok")).scalar_one()
    assert logins == 1
    assert writes_in_one == 1, writes_in_one  # one write transaction
    # The replay is refused, and leaves no second login audit row.
    again = client.get("/saml/sso?" + query)
    assert again.status_code == 400 and b"SAMLResponse" not in again.data


def test_retention_purges_old_audit_rows_and_fetches(store: Store) -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    old, recent = now - dt.timedelta(days=200), now - dt.timedelta(days=1)
    for at in (old, recent):
        store.audit.record(event="login", outcome="ok", now=at)
        store.keyring.record_metadata_fetch(remote_addr="127.0.0.1", user_agent="t", etag='"e"', key_ids=["k"], now=at)
    counts = store.purge_expired(now, audit_retention=dt.timedelta(days=180),
                                 metadata_fetch_retention=dt.timedelta(days=100))
    assert counts["audit_events"] == 1 and counts["metadata_fetches"] == 1
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuditEventRow)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(MetadataFetchRow)).scalar_one() == 1
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
