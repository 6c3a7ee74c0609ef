"""Storage layer: migrations, one-time claims under real concurrency, users, sessions, audit, purge.

Runs on a SQLite file by default and on PostgreSQL when IDP_BRIDGE_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import insert as sa_insert
from sqlalchemy import inspect, select, text

from idp_bridge.errors import ConfigError, StoreUnavailableError, UnknownUserError, UserExistsError
from idp_bridge.store import Store
from idp_bridge.store import engine as engine_module
from idp_bridge.store.engine import parse_url
from idp_bridge.store.migrate import alembic_config, head_revision
from idp_bridge.store.tables import OutboxRow, ReplayId, SessionRow, UserRow, metadata
from tests.conftest import FAST_PASSWORD_HASHER, configured_database_url

NOW = datetime(2026, 5, 9, 12, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ALL_TABLES = {
    "replay_ids",
    "users",
    "sessions",
    "audit_events",
    "bindings",
    "outbox",
    "metadata_fetches",
    "key_states",
    "login_throttle",
    "binding_jumps",
    "binding_notices",
}


# --- migrations ----------------------------------------------------------------------------------


def test_upgrade_creates_every_table_and_matches_the_models(empty_db_url: str) -> None:
    store = Store.from_url(empty_db_url)
    try:
        assert store.current_revision() is None
        assert not store.is_migrated()
        store.upgrade()
        assert store.current_revision() == head_revision()
        assert store.is_migrated()
        store.upgrade()  # a second run is a no-op
        assert store.current_revision() == head_revision()
        with store.engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= ALL_TABLES
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        store.dispose()


def test_workers_starting_together_upgrade_once(empty_db_url: str) -> None:
    stores = [Store.from_url(empty_db_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def run(store: Store) -> None:
        barrier.wait()
        try:
            store.upgrade()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert all(s.is_migrated() for s in stores)
    finally:
        for s in stores:
            s.dispose()


def test_downgrade_to_base_removes_the_schema(empty_db_url: str) -> None:
    store = Store.from_url(empty_db_url)
    try:
        store.upgrade()
        with store.engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with store.engine.connect() as conn:
            assert not (ALL_TABLES & set(inspect(conn).get_table_names()))
        assert store.current_revision() is None
    finally:
        store.dispose()


# --- engine and URLs ------------------------------------------------------------------------------


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.dispose()


def test_configured_postgresql_is_really_used(store: Store) -> None:
    """When CI points the suite at PostgreSQL, prove the fixtures did not fall back to SQLite."""
    url = configured_database_url()
    if url is None:
        pytest.skip("IDP_BRIDGE_TEST_DATABASE_URL is not set: suite runs on SQLite")
    assert store.dialect == "postgresql"
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT current_setting('server_version_num')::int")).scalar_one() > 0
        assert "replay_ids" in inspect(conn).get_table_names()


def test_a_pooled_postgresql_connection_killed_while_idle_is_replaced_before_use(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ping on every checkout (a round trip per transaction), but a connection that idled is pinged: one
    whose server process died meanwhile (a restart, an idle-session timeout) never reaches a request."""
    url = configured_database_url()
    if url is None:
        pytest.skip("IDP_BRIDGE_TEST_DATABASE_URL is not set: suite runs on SQLite")
    monkeypatch.setattr(engine_module, "PG_PING_IDLE_S", 0.2)
    store.engine.dispose()
    with store.engine.connect() as conn:  # the pool's only connection from now on
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = Store.from_url(store.engine.url.render_as_string(hide_password=False))
    try:
        with killer.engine.begin() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        killer.dispose()
    time.sleep(0.4)
    with store.transaction():  # the dead connection was pinged, found dead and replaced: no error
        assert _claim(store, "_after_the_kill")
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_unreachable_postgresql_raises_a_clear_error() -> None:
    url = "postgresql+psycopg://bridge:s3cret-pw@127.0.0.1:1/bridge"
    with pytest.raises(StoreUnavailableError) as caught:
        Store.from_url(url)
    err = caught.value
    assert err.code == "store_unavailable"
    assert err.status == 503
    assert "127.0.0.1:1/bridge" in err.operator
    assert "s3cret-pw" not in str(err)


def test_plain_postgresql_url_gets_the_psycopg_driver() -> None:
    assert parse_url("postgresql://u@h/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "postgresql+asyncpg://u@h/db"])
def test_unsupported_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        Store.from_url(url)


def test_sqlite_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Store.from_url(f"sqlite:///{tmp_path / 'nope' / 'bridge.db'}")


# --- claim_once -------------------------------------------------------------------------------------


def _claim(store: Store, value: str, *, now: datetime = NOW, ttl: timedelta = 5 * MINUTE) -> bool:
    return store.replay.claim(
        "authn_request", value, issuer="https://sp.example", expires_at=now + ttl, now=now
    )


def test_claim_once_first_wins(store: Store) -> None:
    assert _claim(store, "_id1") is True
    assert _claim(store, "_id1") is False
    assert _claim(store, "_id2") is True
    # Same value, other kind: independent.
    assert store.replay.claim("handoff_jti", "_id1", issuer="partner", expires_at=NOW + MINUTE, now=NOW) is True


def test_claim_once_reclaims_only_after_expiry(store: Store) -> None:
    assert _claim(store, "_id", ttl=5 * MINUTE)
    expiry = NOW + 5 * MINUTE
    assert _claim(store, "_id", now=expiry - timedelta(microseconds=1)) is False
    # Expired: the next claim wins, once, and its own expiry now guards the value.
    assert _claim(store, "_id", now=expiry, ttl=10 * MINUTE) is True
    assert _claim(store, "_id", now=expiry + MINUTE) is False
    assert _claim(store, "_id", now=expiry + 9 * MINUTE) is False
    assert _claim(store, "_id", now=expiry + 10 * MINUTE) is True


def test_claim_once_stores_issuer_and_utc_times(store: Store) -> None:
    cet = timezone(timedelta(hours=1))
    now_cet = NOW.astimezone(cet)
    assert store.replay.claim("authn_request", "_z", issuer="sp-a", expires_at=now_cet + MINUTE, now=now_cet)
    with store.engine.connect() as conn:
        row = conn.execute(select(ReplayId)).one()
    assert row.issuer == "sp-a"
    assert row.expires_at == NOW + MINUTE
    assert row.expires_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("kind", "value", "now"),
    [
        ("bogus", "_x", NOW),
        ("authn_request", "", NOW),
        ("authn_request", "x" * 513, NOW),
        ("authn_request", "_x", NOW.replace(tzinfo=None)),
    ],
)
def test_claim_once_refuses_bad_input(store: Store, kind: str, value: str, now: datetime) -> None:
    with pytest.raises(ValueError):
        store.replay.claim(kind, value, issuer="sp", expires_at=NOW + MINUTE, now=now)


def test_claim_once_race_between_threads(db_url: str) -> None:
    store = Store.from_url(db_url)
    threads_n, values = 8, [f"_t{i}" for i in range(40)]
    wins: list[list[str]] = [[] for _ in range(threads_n)]
    barrier = threading.Barrier(threads_n)

    def run(slot: int) -> None:
        barrier.wait()
        for v in values:
            if _claim(store, v):
                wins[slot].append(v)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.dispose()
    flat = [v for w in wins for v in w]
    assert sorted(flat) == sorted(values)  # every value won exactly once


def _race_worker(url: str, values: list[str], now_iso: str, barrier: Any, out: Any) -> None:
    """Runs in a spawned process: claim every value, report which ones this process won."""
    store = Store.from_url(url)
    now = datetime.fromisoformat(now_iso)
    won: list[str] = []
    try:
        barrier.wait(timeout=60)
        for v in values:
            if store.replay.claim("handoff_jti", v, issuer="partner", expires_at=now + MINUTE, now=now):
                won.append(v)
    finally:
        store.dispose()
        out.put(won)


def _race_processes(url: str, values: list[str], now: datetime, processes: int = 3) -> list[list[str]]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(url, values, now.isoformat(), barrier, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def test_claim_once_race_between_processes(db_url: str) -> None:
    values = [f"_p{i}" for i in range(150)]
    results = _race_processes(db_url, values, NOW)
    flat = [v for won in results for v in won]
    assert sorted(flat) == sorted(values)


def test_reclaiming_an_expired_value_race_between_processes(store: Store, db_url: str) -> None:
    values = [f"_e{i}" for i in range(100)]
    for v in values:
        assert store.replay.claim("handoff_jti", v, issuer="old", expires_at=NOW, now=NOW - MINUTE)
    later = NOW + timedelta(seconds=1)
    results = _race_processes(db_url, values, later)
    flat = [v for won in results for v in won]
    assert sorted(flat) == sorted(values)
    with store.engine.connect() as conn:
        issuers = set(conn.execute(select(ReplayId.issuer)).scalars())
    assert issuers == {"partner"}


# --- users ----------------------------------------------------------------------------------------


def test_add_and_get_user(store: Store) -> None:
    user = store.users.add(
        "alice", "correct horse", email="a@example.com", name="Alice", mobile="+86-1", now=NOW
    )
    assert user.user_id == "alice"
    got = store.users.get("alice")
    assert got == user
    assert got is not None and not hasattr(got, "password_hash")
    assert store.users.get("bob") is None
    with pytest.raises(UserExistsError):
        store.users.add("alice", "other")


def test_password_is_stored_as_argon2id(store: Store) -> None:
    store.users.add("alice", "correct horse")
    with store.engine.connect() as conn:
        stored = conn.execute(select(UserRow.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


def test_authenticate(store: Store) -> None:
    store.users.add("alice", "correct horse")
    assert store.users.authenticate("alice", "correct horse") is not None
    assert store.users.authenticate("alice", "wrong") is None
    assert store.users.authenticate("alice", "") is None
    assert store.users.authenticate("nobody", "correct horse") is None
    store.users.set_password("alice", "new pass")
    assert store.users.authenticate("alice", "correct horse") is None
    assert store.users.authenticate("alice", "new pass") is not None
    store.users.set_disabled("alice", True)
    assert store.users.authenticate("alice", "new pass") is None
    with pytest.raises(UnknownUserError):
        store.users.set_password("nobody", "x")


def test_authenticate_rehashes_when_parameters_change(db_url: str) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=512, parallelism=1)
    old = Store.from_url(db_url, password_hasher=weak)
    old.users.add("alice", "pw")
    old.dispose()
    store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    try:
        assert store.users.authenticate("alice", "pw") is not None
        with store.engine.connect() as conn:
            stored = conn.execute(select(UserRow.password_hash)).scalar_one()
        assert not FAST_PASSWORD_HASHER.check_needs_rehash(stored)
        assert weak.check_needs_rehash(stored)
        assert store.users.authenticate("alice", "pw") is not None
    finally:
        store.dispose()


def test_default_password_hasher_is_argon2id_rfc9106(db_url: str) -> None:
    store = Store.from_url(db_url)
    try:
        store.users.add("alice", "pw")
        assert store.users.authenticate("alice", "pw") is not None
        with store.engine.connect() as conn:
            stored = conn.execute(select(UserRow.password_hash)).scalar_one()
        assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    finally:
        store.dispose()


# --- sessions -------------------------------------------------------------------------------------


def test_session_lifecycle(store: Store) -> None:
    token = store.sessions.create({"sp": "huawei", "n": 1}, user_id="alice", now=NOW, ttl=30 * MINUTE)
    assert len(token) == 43
    record = store.sessions.load(token, now=NOW + MINUTE)
    assert record is not None
    assert record.data == {"sp": "huawei", "n": 1}
    assert record.user_id == "alice"
    assert record.created_at == NOW
    assert record.expires_at == NOW + 30 * MINUTE

    assert store.sessions.save(token, {"n": 2}, user_id=None, now=NOW + 20 * MINUTE, ttl=30 * MINUTE)
    record = store.sessions.load(token, now=NOW + 40 * MINUTE)  # expiry slid to NOW+50
    assert record is not None and record.data == {"n": 2} and record.user_id is None

    assert store.sessions.load(token, now=NOW + 50 * MINUTE) is None
    assert store.sessions.delete(token)
    assert not store.sessions.delete(token)


def test_session_rows_hold_only_the_token_hash(store: Store) -> None:
    token = store.sessions.create({}, user_id=None, now=NOW, ttl=MINUTE)
    with store.engine.connect() as conn:
        ids = list(conn.execute(select(SessionRow.id)).scalars())
    assert ids == [hashlib.sha256(token.encode()).hexdigest()]


def test_expired_or_unknown_session_is_not_revived(store: Store) -> None:
    token = store.sessions.create({}, user_id=None, now=NOW, ttl=MINUTE)
    assert not store.sessions.save(token, {"x": 1}, user_id="eve", now=NOW + 2 * MINUTE, ttl=MINUTE)
    forged = "A" * 43
    assert not store.sessions.save(forged, {"x": 1}, user_id="eve", now=NOW, ttl=MINUTE)
    assert store.sessions.load(forged, now=NOW) is None
    for malformed in ("", "short", "A" * 44, "A" * 42 + "!"):
        assert store.sessions.load(malformed, now=NOW) is None


# --- audit ----------------------------------------------------------------------------------------


def test_record_and_list_events(store: Store) -> None:
    store.audit.record(
        event="login", outcome="ok", correlation_id="c1", sp="https://sp", customer="x1", now=NOW
    )
    store.audit.record(
        event="rejection",
        outcome="refused",
        reason_code="request_replayed",
        detail={"request_id": "_abc", "password": "hunter2", "nested": {"SAMLResponse": "PHNhbWw+"}},
        now=NOW + MINUTE,
    )
    events = store.audit.recent()
    assert [e.event for e in events] == ["rejection", "login"]
    newest = events[0]
    assert newest.outcome == "refused" and newest.reason_code == "request_replayed"
    assert newest.at == NOW + MINUTE and newest.at.tzinfo is not None
    assert newest.detail == {
        "request_id": "_abc",
        "password": "[redacted]",
        "nested": {"SAMLResponse": "[redacted]"},
    }
    assert events[1].correlation_id == "c1" and events[1].detail is None
    assert len(store.audit.recent(limit=1)) == 1


def test_record_event_refuses_unknown_outcome(store: Store) -> None:
    with pytest.raises(ValueError):
        store.audit.record(event="login", outcome="maybe", now=NOW)


def test_audit_detail_strings_are_bounded(store: Store) -> None:
    store.audit.record(event="webhook", outcome="error", detail={"body": "x" * 10_000}, now=NOW)
    (event,) = store.audit.recent()
    assert event.detail is not None and len(event.detail["body"]) <= 513


# --- purge ----------------------------------------------------------------------------------------


def test_purge_expired(store: Store) -> None:
    _claim(store, "_old", now=NOW - 10 * MINUTE, ttl=MINUTE)
    _claim(store, "_live", now=NOW, ttl=MINUTE)
    old_session = store.sessions.create({}, user_id=None, now=NOW - 10 * MINUTE, ttl=MINUTE)
    live_session = store.sessions.create({}, user_id=None, now=NOW, ttl=MINUTE)
    with store.engine.begin() as conn:
        for key, delivered in (("a", NOW - timedelta(days=8)), ("b", NOW - timedelta(days=1)), ("c", None)):
            conn.execute(
                sa_insert(OutboxRow).values(
                    topic="bind",
                    dedupe_key=key,
                    payload={},
                    created_at=NOW - timedelta(days=9),
                    attempts=1,
                    next_attempt_at=NOW - timedelta(days=9),
                    delivered_at=delivered,
                )
            )

    assert store.purge_expired(NOW) == {"replay_ids": 1, "sessions": 1, "outbox": 1, "login_throttle": 0,
                                        "binding_jumps": 0, "audit_events": 0, "metadata_fetches": 0}
    assert store.purge_expired(NOW) == {"replay_ids": 0, "sessions": 0, "outbox": 0, "login_throttle": 0,
                                        "binding_jumps": 0, "audit_events": 0, "metadata_fetches": 0}
    assert _claim(store, "_live") is False
    assert store.sessions.load(live_session, now=NOW) is not None
    assert store.sessions.load(old_session, now=NOW - 10 * MINUTE) is None
    with store.engine.connect() as conn:
        assert set(conn.execute(select(OutboxRow.dedupe_key)).scalars()) == {"b", "c"}
