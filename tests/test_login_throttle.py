"""Password guessing is throttled per account and per client address in the shared database, on the local
``/login`` and the console's ``/_bridge/login``: 429 + Retry-After, lock-outs audited, limits from
``[limits]``; unknown users and wrong passwords stay indistinguishable (text, status, one argon2 verification).
Parallel guesses through two apps ("workers") on one database are counted like sequential ones."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient

from idp_bridge.config import read_raw_config, write_raw_config
from idp_bridge.errors import ConfigError
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.store import Store
from idp_bridge.store.throttle import ThrottleRule
from idp_bridge.web import create_app
from idp_bridge.web.login_guard import client_network
from tests.journey import PASSWORD, Env, make_env

OPERATOR_PASSWORD = "operator-password-for-tests"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


class CountingHasher(PasswordHasher):
    """The real argon2id hasher (small parameters), counting its verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified = 0
        self.hashed = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashed += 1
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:  # noqa: A002 - argon2's own name
        self.verified += 1
        return super().verify(hash, password)


def configure(env: Env, **tables: dict[str, Any]) -> None:
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    for name, values in tables.items():
        raw.setdefault(name, {}).update(values)
    write_raw_config(env.config.path, raw)


def build(env: Env, hasher: PasswordHasher | None = None) -> tuple[Flask, Store]:
    from idp_bridge.config import load_config

    cfg = load_config(env.config.path, environ={})
    store = Store.from_url(cfg.database_url, password_hasher=hasher or CountingHasher())
    app = create_app(bridge=IdentityProvider(cfg, store))
    return app, store


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    e = make_env(tmp_path / "bridge", db_url)
    configure(e, limits={"login_account_attempts": 3, "login_address_attempts": 6, "login_lockout_seconds": 600},
              debug={"enabled": True, "password": OPERATOR_PASSWORD})
    return e


@pytest.fixture
def app(env: Env) -> Iterator[Flask]:
    application, store = build(env)
    store.users.add("cust-1001", PASSWORD)
    store.users.add("cust-2002", PASSWORD)
    yield application
    store.dispose()


def csrf(client: FlaskClient, path: str) -> str:
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert token
    return token.group(1)


def post_login(client: FlaskClient, user_id: str, password: str, **environ: str) -> Any:
    return client.post("/login", data={"user_id": user_id, "password": password,
                                       "csrf_token": csrf(client, "/login")}, environ_overrides=environ)


def lockouts(store: Store) -> list[Any]:
    return [e for e in store.audit.recent(200) if e.event == "login_lockout"]


def test_account_locked_after_its_limit_even_for_the_right_password(app: Flask) -> None:
    store: Store = app.extensions["idp_bridge"].store
    client = app.test_client()
    for _ in range(3):
        resp = post_login(client, "cust-1001", "wrong password")
        assert resp.status_code == 401
    locked = post_login(client, "cust-1001", PASSWORD)
    assert locked.status_code == 429
    assert 590 <= int(locked.headers["Retry-After"]) <= 600
    assert "Too many sign-in attempts" in locked.get_data(as_text=True)
    with client.session_transaction() as sess:
        assert "customer" not in sess  # nobody signed in
    (event,) = lockouts(store)
    assert event.reason_code == "login_locked_account" and event.customer == "cust-1001"
    assert event.detail["limit"] == 3 and event.detail["lockout_seconds"] == 600
    again = post_login(client, "cust-1001", PASSWORD)
    assert again.status_code == 429 and len(lockouts(store)) == 1  # a lock-out is audited once, when it starts
    # the honest neighbour on the same address still signs in
    ok = post_login(app.test_client(), "cust-2002", PASSWORD)
    assert ok.status_code == 302


def test_success_clears_the_account_count(app: Flask) -> None:
    client = app.test_client()
    for _ in range(2):
        assert post_login(client, "cust-1001", "wrong password").status_code == 401
    assert post_login(client, "cust-1001", PASSWORD).status_code == 302
    for _ in range(3):  # a fresh allowance after the success
        assert post_login(app.test_client(), "cust-1001", "wrong again").status_code == 401
    assert post_login(app.test_client(), "cust-1001", PASSWORD).status_code == 429


def test_unknown_user_and_wrong_password_are_indistinguishable(env: Env) -> None:
    hasher = CountingHasher()
    app, store = build(env, hasher)
    store.users.add("cust-1001", PASSWORD)
    hasher.verified = hasher.hashed = 0
    client = app.test_client()
    known = post_login(client, "cust-1001", "wrong password")
    assert hasher.verified == 1
    unknown = post_login(client, "nobody-here", "wrong password")
    assert hasher.verified == 2  # an unknown user costs the same argon2 verification (a dummy hash)
    assert hasher.hashed == 0  # ... and nothing more: the dummy hash was made when the app started

    def page(resp: Any) -> str:
        return re.sub(r'(value|nonce)="[^"]+"|[0-9a-f]{16}', "", resp.get_data(as_text=True))

    assert known.status_code == unknown.status_code == 401
    assert page(known) == page(unknown)
    for _ in range(2):
        post_login(client, "nobody-here", "wrong password")
    assert post_login(client, "nobody-here", "x").status_code == 429  # unknown accounts lock out alike
    store.dispose()


def test_address_limit_across_accounts_with_trusted_forwarded_for(env: Env) -> None:
    configure(env, bridge={"trust_forwarded_headers": True})
    app, store = build(env)
    client = app.test_client()
    attacker = {"HTTP_X_FORWARDED_FOR": "203.0.113.7"}
    for i in range(6):  # six accounts, one guess each: the per-account limit never trips
        assert post_login(client, f"victim-{i}", "guess", **attacker).status_code == 401
    refused = post_login(client, "victim-7", "guess", **attacker)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    (event,) = lockouts(store)
    assert event.reason_code == "login_locked_address" and event.detail["address"] == "203.0.113.7"
    # another client address is not affected
    assert post_login(client, "victim-8", "guess", HTTP_X_FORWARDED_FOR="198.51.100.9").status_code == 401
    store.dispose()


def test_parallel_guesses_on_two_workers_are_all_counted(env: Env) -> None:
    """Twelve simultaneous guesses through two apps sharing the database: at most 3 reach the password check."""
    apps = [build(env), build(env)]
    clients = []
    for i in range(12):
        client = apps[i % 2][0].test_client()
        clients.append((client, csrf(client, "/login")))
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def guess(client: FlaskClient, token: str) -> None:
        barrier.wait()
        resp = client.post("/login", data={"user_id": "cust-1001", "password": "guess", "csrf_token": token})
        statuses.append(resp.status_code)

    threads = [threading.Thread(target=guess, args=c) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [401] * 3 + [429] * 9
    for _, store in apps:
        store.dispose()


def test_console_login_throttled(env: Env) -> None:
    app, store = build(env)
    client = app.test_client()
    token = csrf(client, "/_bridge/login")
    for _ in range(3):
        assert client.post("/_bridge/login", data={"password": "guess", "csrf_token": token}).status_code == 401
    refused = client.post("/_bridge/login", data={"password": OPERATOR_PASSWORD, "csrf_token": token})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert client.get("/_bridge/").status_code == 302  # not signed in
    (event,) = lockouts(store)
    assert event.reason_code == "console_locked_account"
    store.dispose()


def test_console_honest_sign_in_still_works(env: Env) -> None:
    app, store = build(env)
    client = app.test_client()
    token = csrf(client, "/_bridge/login")
    assert client.post("/_bridge/login", data={"password": "typo", "csrf_token": token}).status_code == 401
    ok = client.post("/_bridge/login", data={"password": OPERATOR_PASSWORD, "csrf_token": token})
    assert ok.status_code == 302 and client.get("/_bridge/").status_code == 200
    store.dispose()


# --- the store's rule, with the clock passed in ----------------------------------------------------------


def test_lock_out_ends_and_purge_forgets(store: Store) -> None:
    rule = ThrottleRule(2, dt.timedelta(minutes=15), dt.timedelta(minutes=10))
    assert store.throttle.reserve({"k": rule}, now=NOW).allowed
    assert store.throttle.reserve({"k": rule}, now=NOW).allowed
    refused = store.throttle.reserve({"k": rule}, now=NOW + dt.timedelta(seconds=1))
    assert not refused.allowed and refused.newly_locked == ("k",) and refused.retry_after == 600
    later = store.throttle.reserve({"k": rule}, now=NOW + dt.timedelta(minutes=5))
    assert not later.allowed and later.newly_locked == () and 299 <= later.retry_after <= 301
    assert store.throttle.reserve({"k": rule}, now=NOW + dt.timedelta(minutes=11)).allowed
    assert store.purge_expired(NOW + dt.timedelta(minutes=20))["login_throttle"] == 0  # window still open
    assert store.purge_expired(NOW + dt.timedelta(minutes=27))["login_throttle"] == 1


def test_window_resets_the_count(store: Store) -> None:
    rule = ThrottleRule(1, dt.timedelta(minutes=1), dt.timedelta(minutes=10))
    assert store.throttle.reserve({"k": rule}, now=NOW).allowed
    assert store.throttle.reserve({"k": rule}, now=NOW + dt.timedelta(minutes=2)).allowed


def test_client_network() -> None:
    assert client_network("203.0.113.7") == "203.0.113.7"
    assert client_network("2001:db8:1:2:aaaa::1") == client_network("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_network("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_network(None) == client_network("not an address") == "unknown"


def test_limits_config(env: Env) -> None:
    from idp_bridge.config import load_config

    assert env.config.path is not None
    assert load_config(env.config.path, environ={}).limits.login_account_attempts == 3
    for bad in ({"login_account_attempts": 0}, {"login_window_seconds": "900"}, {"login_attemps": 3}):
        configure(env, limits=bad)
        with pytest.raises(ConfigError, match="limits"):
            load_config(env.config.path, environ={})
        raw = read_raw_config(env.config.path)
        raw["limits"] = {}
        write_raw_config(env.config.path, raw)


def test_honest_sign_ins_racing_on_one_account_never_fail(store: Store) -> None:
    """Several browsers signing in to one account at once: each success deletes the account's row while
    another attempt is counting it. Every attempt must be counted and allowed, none must crash (on
    PostgreSQL a row deleted between the insert and the locking read once gave a KeyError)."""
    rule = ThrottleRule(50, dt.timedelta(minutes=15), dt.timedelta(minutes=10))
    errors: list[BaseException] = []
    refused: list[int] = []

    def sign_ins() -> None:
        for _ in range(40):
            try:
                verdict = store.throttle.reserve({"login:account:x": rule, "login:address:127.0.0.1": rule},
                                                 now=dt.datetime.now(dt.UTC))
                if not verdict.allowed:
                    refused.append(verdict.retry_after)
                store.throttle.succeeded(reset=["login:account:x"], refund=["login:address:127.0.0.1"])
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=sign_ins) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and refused == [], (errors[:3], refused[:3])
