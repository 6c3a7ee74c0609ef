"""The per-request statements on the raw DBAPI connection (store/driver.py): the same values as SQLAlchemy's
path in both directions, one transaction for claim + audit + session, the first claim wins under threads,
faults as StoreUnavailableError with recovery, and no SQLAlchemy read()/write() inside a driver transaction.

Runs on a SQLite file by default and on PostgreSQL when IDP_BRIDGE_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy import insert as sa_insert
from sqlalchemy.exc import IntegrityError

from idp_bridge.errors import StoreUnavailableError
from idp_bridge.store import Store
from idp_bridge.store import engine as engine_module
from idp_bridge.store.audit import _values
from idp_bridge.store.sessions import SessionRecord, token_id
from idp_bridge.store.tables import AuditEventRow, ReplayId, SessionRow
from tests.conftest import configured_database_url

# 12:00 UTC with a +02:00 offset and no microseconds; and one with microseconds.
AT = datetime(2026, 5, 9, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
AT_US = datetime(2026, 5, 9, 12, 0, 0, 123456, tzinfo=UTC)
TTL = timedelta(minutes=30)
DATA: dict[str, Any] = {"user_id": "alice", "n": 1, "nested": {"none": None, "list": [1, "é", True]}, "ü": "ß"}


def _raw(store: Store, sql: str, *columns: str) -> list[tuple[Any, ...]]:
    """``columns`` as the database holds them (PostgreSQL: as text), rows in a stable order."""
    cast = [c if store.dialect == "sqlite" else f"{c}::text" for c in columns]
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql.format(", ".join(cast))).all()]


def _sa_session(store: Store, token: str, data: dict[str, Any], *, now: datetime, ttl: timedelta) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa_insert(SessionRow).values(id=token_id(token), data=data, user_id=None, created_at=now,
                                                  expires_at=now + ttl))


@pytest.fixture
def sqlite_only(store: Store) -> Store:
    if store.dialect != "sqlite":
        pytest.skip("SQLite only")
    return store


@pytest.fixture
def pg_only(store: Store) -> Store:
    if store.dialect != "postgresql":
        pytest.skip("IDP_BRIDGE_TEST_DATABASE_URL is not set: suite runs on SQLite")
    return store


# --- the same values as SQLAlchemy's path ---------------------------------------------------------------


@pytest.mark.parametrize("now", [AT, AT_US], ids=["offset", "microseconds"])
def test_session_rows_are_those_sqlalchemy_writes(store: Store, now: datetime) -> None:
    token = store.sessions.create(DATA, user_id=None, now=now, ttl=TTL)
    other = "B" * 43
    _sa_session(store, other, DATA, now=now, ttl=TTL)
    rows = _raw(store, "SELECT {} FROM sessions", "data", "user_id", "created_at", "expires_at")
    assert len(rows) == 2 and rows[0] == rows[1]  # byte for byte
    if store.dialect == "sqlite":
        assert rows[0][2] == "2026-05-09 12:00:00" + (".000000" if now is AT else ".123456")
    # and SQLAlchemy reads the driver's row as it reads its own
    with store.engine.connect() as conn:
        read = conn.execute(select(SessionRow.data, SessionRow.user_id, SessionRow.created_at,
                                   SessionRow.expires_at).where(SessionRow.id == token_id(token))).one()
    assert tuple(read) == (DATA, None, now, now + TTL)
    assert read.created_at.tzinfo is UTC


def test_sessions_written_by_sqlalchemy_are_read_and_saved_by_the_driver(store: Store) -> None:
    token = "C" * 43
    _sa_session(store, token, DATA, now=AT_US, ttl=TTL)
    record = store.sessions.load(token, now=AT_US + TTL - timedelta(microseconds=1))
    assert record == SessionRecord(data=DATA, user_id=None, created_at=AT_US, expires_at=AT_US + TTL)
    assert record.created_at.tzinfo is UTC and record.expires_at.tzinfo is UTC
    assert store.sessions.load(token, now=AT_US + TTL) is None  # expiry compares across both paths
    assert store.sessions.save(token, {"n": 2}, user_id="bob", now=AT, ttl=TTL)
    with store.engine.connect() as conn:
        row = conn.execute(select(SessionRow.data, SessionRow.user_id, SessionRow.expires_at)).one()
    assert tuple(row) == ({"n": 2}, "bob", AT + TTL)
    assert store.sessions.delete(token) and not store.sessions.delete(token)


def test_audit_rows_are_those_sqlalchemy_writes(store: Store) -> None:
    for detail in (None, {"request_id": "_r1", "acs": "https://sp/acs", "password": "x", "é": [1, None]}):
        uid = "u-driver" if detail is None else "u-driver-2"
        assert store.audit.record(event="login", outcome="ok", sp="https://sp", customer="x1", detail=detail,
                                  now=AT, event_uid=uid)
        assert not store.audit.record(event="login", outcome="ok", now=AT, event_uid=uid)  # stored once
        with store.engine.begin() as conn:
            conn.execute(sa_insert(AuditEventRow).values(_values(event="login", outcome="ok", sp="https://sp",
                                                                 customer="x1", detail=detail, at=AT,
                                                                 event_uid=uid + "-sa")))
    rows = _raw(store, "SELECT {} FROM audit_events ORDER BY id", "at", "event", "outcome", "reason_code",
                "correlation_id", "sp", "customer", "detail")
    assert rows[0] == rows[1] and rows[2] == rows[3]
    assert rows[0][7] == "null" and rows[0][3] is None  # JSON null, as SQLAlchemy writes None; SQL NULL
    events = sorted(store.audit.recent(), key=lambda e: e.id)
    driver_rows, sa_rows = events[0::2], events[1::2]
    assert [(e.at, e.detail, e.sp) for e in driver_rows] == [(e.at, e.detail, e.sp) for e in sa_rows]
    assert driver_rows[0].detail is None
    assert driver_rows[1].detail is not None and driver_rows[1].detail["password"] == "[redacted]"
    assert driver_rows[0].at == AT and driver_rows[0].at.tzinfo is UTC
    # a row without event_uid: nothing to conflict with
    assert store.audit.record(event="login", outcome="refused", now=AT)
    assert store.audit.record(event="login", outcome="refused", now=AT)


def test_replay_rows_are_those_sqlalchemy_writes_and_expiry_compares_across(store: Store) -> None:
    assert store.replay.claim("authn_request", "_d", issuer="https://sp", expires_at=AT_US + TTL, now=AT)
    with store.engine.begin() as conn:
        conn.execute(sa_insert(ReplayId).values(kind="authn_request", value="_s", issuer="https://sp",
                                                claimed_at=AT, expires_at=AT_US + TTL))
    rows = _raw(store, "SELECT {} FROM replay_ids ORDER BY value", "issuer", "claimed_at", "expires_at")
    assert rows[0] == rows[1]
    # a value SQLAlchemy wrote: held until its expiry, then taken over
    assert not store.replay.claim("authn_request", "_s", issuer="x", expires_at=AT_US + 2 * TTL,
                                  now=AT_US + TTL - timedelta(microseconds=1))
    assert store.replay.claim("authn_request", "_s", issuer="x", expires_at=AT_US + 2 * TTL, now=AT_US + TTL)
    with store.engine.connect() as conn:
        row = conn.execute(select(ReplayId.issuer, ReplayId.claimed_at).where(ReplayId.value == "_s")).one()
    assert tuple(row) == ("x", AT_US + TTL)


def test_validation_is_unchanged(store: Store) -> None:
    naive = datetime(2026, 5, 9, 12, 0, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.sessions.load("A" * 43, now=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.replay.claim("authn_request", "_x", issuer="sp", expires_at=naive, now=AT)
    with pytest.raises(ValueError, match="replay kind"):
        store.replay.claim("other", "_x", issuer="sp", expires_at=AT, now=AT)
    with pytest.raises(ValueError, match="outcome"):
        store.audit.record(event="login", outcome="maybe", now=AT)
    assert store.audit.record(event="e" * 100, outcome="ok", correlation_id="c" * 500, now=AT)
    (event,) = store.audit.recent()
    assert event.event == "e" * 32 and event.correlation_id == "c" * 128


# --- one transaction ---------------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_a_transaction_that_raises_rolls_back_claim_audit_and_session(store: Store) -> None:
    kept = store.sessions.create({"k": 1}, user_id=None, now=AT, ttl=TTL)
    with pytest.raises(Boom), store.transaction():
        assert store.replay.claim("authn_request", "_r", issuer="sp", expires_at=AT + TTL, now=AT)
        assert store.audit.record(event="login", outcome="ok", now=AT, event_uid="u1")
        new = store.sessions.create({"n": 1}, user_id="alice", now=AT, ttl=TTL)
        assert store.sessions.load(new, now=AT) is not None  # the transaction sees its own writes
        assert store.sessions.delete(kept)
        with store.transaction():  # a nested one joins
            assert store.sessions.save(new, {"n": 2}, user_id="alice", now=AT, ttl=TTL)
        raise Boom
    assert store.audit.recent() == []
    assert store.sessions.load(new, now=AT) is None
    assert store.sessions.load(kept, now=AT) is not None
    with store.transaction():
        assert store.replay.claim("authn_request", "_r", issuer="sp", expires_at=AT + TTL, now=AT)
        assert store.audit.record(event="login", outcome="ok", now=AT, event_uid="u1")
        new = store.sessions.create({"n": 1}, user_id="alice", now=AT, ttl=TTL)
    assert len(store.audit.recent()) == 1 and store.sessions.load(new, now=AT) is not None
    assert not store.replay.claim("authn_request", "_r", issuer="sp", expires_at=AT + TTL, now=AT)


def test_sqlite_statements_sent_per_unit(sqlite_only: Store) -> None:
    """What SQLite really runs (its trace callback): a lone statement without BEGIN/COMMIT, a transaction
    as BEGIN IMMEDIATE, its statements, COMMIT (or ROLLBACK); an empty transaction sends nothing."""
    store = sqlite_only
    token = store.sessions.create({"n": 1}, user_id=None, now=AT, ttl=TTL)
    sent: list[str] = []
    store.engine.dispose()
    event.listen(store.engine, "connect", lambda dbapi, _record: dbapi.set_trace_callback(sent.append))
    assert store.sessions.load(token, now=AT) is not None
    assert [s.split(" ", 1)[0] for s in sent] == ["SELECT"]
    sent.clear()
    with store.transaction():
        pass
    assert sent == []
    with store.transaction():
        assert store.replay.claim("authn_request", "_s", issuer="sp", expires_at=AT + TTL, now=AT)
        assert store.audit.record(event="login", outcome="ok", now=AT, event_uid="u-s")
        assert store.sessions.save(token, {"n": 2}, user_id=None, now=AT, ttl=TTL)
    assert [" ".join(s.split(" ", 3)[:3]) for s in sent] == [
        "BEGIN IMMEDIATE", "INSERT INTO replay_ids", "INSERT INTO audit_events", "UPDATE sessions SET", "COMMIT"]
    sent.clear()
    with pytest.raises(Boom), store.transaction():
        store.sessions.delete(token)
        raise Boom
    assert [s.split(" ", 1)[0] for s in sent] == ["BEGIN", "DELETE", "ROLLBACK"]


def test_sqlalchemy_read_or_write_inside_a_driver_transaction_raises(store: Store) -> None:
    with pytest.raises(RuntimeError, match=r"Database\.read\(\) called by UserRepository\.get inside"), \
            store.transaction():
        assert store.replay.claim("authn_request", "_r", issuer="sp", expires_at=AT + TTL, now=AT)
        store.users.get("alice")
    with pytest.raises(RuntimeError, match=r"Database\.write\(\) called by AuditRepository\.restore"), \
            store.transaction():
        store.audit.restore([{"event": "login", "outcome": "ok", "at": AT.isoformat(), "event_uid": "u"}])
    # nothing of it committed, and outside a transaction both paths work
    assert store.replay.claim("authn_request", "_r", issuer="sp", expires_at=AT + TTL, now=AT)
    assert store.users.get("alice") is None


def test_concurrent_claims_of_one_id_exactly_one_wins(store: Store) -> None:
    threads_n, rounds = 8, 10
    barrier = threading.Barrier(threads_n)
    wins: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait(timeout=30)
                with store.transaction():
                    won = store.replay.claim("authn_request", f"_race{r}", issuer="sp", expires_at=AT + TTL, now=AT)
                    store.audit.record(event="login", outcome="ok" if won else "refused", now=AT,
                                       event_uid=f"{slot}-{r}")
                if won:
                    wins.append((slot, f"_race{r}"))
        except BaseException as exc:  # asserted below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(v for _, v in wins) == sorted(f"_race{r}" for r in range(rounds))  # one winner per ID
    events = store.audit.recent(limit=1000)
    assert len(events) == threads_n * rounds  # every transaction committed
    assert sum(e.outcome == "ok" for e in events) == rounds


# --- faults ---------------------------------------------------------------------------------------------------


def _unavailable(store: Store, caught: pytest.ExceptionInfo[StoreUnavailableError]) -> str:
    assert caught.value.status == 503
    prefix = f"database {store.describe()} unavailable: "
    assert caught.value.operator.startswith(prefix), caught.value.operator
    return caught.value.operator.removeprefix(prefix)


def test_a_fault_inside_a_transaction_fails_the_rest_of_it(store: Store) -> None:
    """A driver error other than an integrity error (here: bad SQL) discards the connection; the block may
    catch it, but what follows fails too and nothing of the transaction commits."""
    token = store.sessions.create({"k": 1}, user_id=None, now=AT, ttl=TTL)
    with pytest.raises(StoreUnavailableError), store.transaction():
        assert store.replay.claim("authn_request", "_f", issuer="sp", expires_at=AT + TTL, now=AT)
        with pytest.raises(StoreUnavailableError):
            store._db.hot.one("SELEC nonsense", ())
        with pytest.raises(StoreUnavailableError):
            store.sessions.delete(token)
    assert store.replay.claim("authn_request", "_f", issuer="sp", expires_at=AT + TTL, now=AT)
    assert store.sessions.load(token, now=AT) is not None


def test_an_integrity_error_is_no_fault(store: Store) -> None:
    sql = "INSERT INTO replay_ids (kind, value, issuer, claimed_at, expires_at) VALUES (?, ?, ?, ?, ?)"
    if store.dialect == "postgresql":
        sql = sql.replace("?", "%s")
    hot = store._db.hot
    params = ("authn_request", "_i", "sp", hot.stamp(AT), hot.stamp(AT))
    assert hot.count(sql, params) == 1
    with pytest.raises(IntegrityError):
        hot.count(sql, params)
    assert store.replay.claim("authn_request", "_j", issuer="sp", expires_at=AT + TTL, now=AT)
    if store.dialect == "postgresql":  # the one-statement unit gave the connection back as it came
        with store.engine.connect() as conn:
            assert conn.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]


def test_sqlite_connections_opened_read_only_fail_then_the_next_ones_work(sqlite_only: Store) -> None:
    """Connections opened while the database is read-only (here: ``PRAGMA query_only``, as chmod means nothing
    to root) fail their writes with 503 and are thrown away, so the first write after the cause is gone works."""
    store = sqlite_only

    def read_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    store.engine.dispose()
    event.listen(store.engine, "connect", read_only)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            store.sessions.create({"n": 1}, user_id=None, now=AT, ttl=TTL)
        assert "readonly" in _unavailable(store, caught)
        with pytest.raises(StoreUnavailableError), store.transaction():
            store.replay.claim("authn_request", "_ro", issuer="sp", expires_at=AT + TTL, now=AT)
    finally:
        event.remove(store.engine, "connect", read_only)
    token = store.sessions.create({"n": 1}, user_id=None, now=AT, ttl=TTL)
    with store.transaction():
        assert store.replay.claim("authn_request", "_ro", issuer="sp", expires_at=AT + TTL, now=AT)
        assert store.sessions.save(token, {"n": 2}, user_id=None, now=AT, ttl=TTL)


def test_sqlite_lock_held_past_the_busy_timeout(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if configured_database_url() is not None:
        pytest.skip("SQLite only")
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    store = Store.from_url(db_url)
    try:
        token = store.sessions.create({"n": 1}, user_id=None, now=AT, ttl=TTL)
        locker = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailableError) as caught, store.transaction():
                store.replay.claim("authn_request", "_l", issuer="sp", expires_at=AT + TTL, now=AT)
            assert "locked" in _unavailable(store, caught)
            with pytest.raises(StoreUnavailableError):
                store.sessions.save(token, {"n": 2}, user_id=None, now=AT, ttl=TTL)
            assert store.sessions.load(token, now=AT) is not None  # WAL: readers do not wait for the writer
        finally:
            locker.close()
        with store.transaction():
            assert store.replay.claim("authn_request", "_l", issuer="sp", expires_at=AT + TTL, now=AT)
            assert store.sessions.save(token, {"n": 2}, user_id=None, now=AT, ttl=TTL)
    finally:
        store.dispose()


@pytest.fixture
def killer(pg_only: Store) -> Iterator[Store]:
    other = Store.from_url(pg_only.engine.url.render_as_string(hide_password=False))
    yield other
    other.dispose()


def _terminate(killer: Store, pids: list[int]) -> None:
    with killer.engine.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM unnest(CAST(:pids AS int[])) AS pid"),
                     {"pids": pids})
    deadline = time.monotonic() + 10
    while True:
        with killer.engine.connect() as conn:
            alive = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(CAST(:pids AS int[]))"),
                                 {"pids": pids}).scalar_one()
        if not alive:
            return
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_postgresql_connections_killed_give_503_and_the_pool_is_replaced(
        pg_only: Store, killer: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """No idle ping (the connections were used a moment ago): the first request on a killed connection fails
    with a 503, the disconnect replaces the pool, so the next request works (not the next dead connection)."""
    store = pg_only
    monkeypatch.setattr(engine_module, "PG_PING_IDLE_S", 3600.0)
    token = store.sessions.create({"n": 1}, user_id=None, now=AT, ttl=TTL)
    store.engine.dispose()
    held = [store.engine.pool.connect() for _ in range(2)]  # two pooled connections
    pids = [c.dbapi_connection.info.backend_pid for c in held]  # type: ignore[union-attr]
    for c in held:
        c.close()
    _terminate(killer, pids)
    with pytest.raises(StoreUnavailableError) as caught:
        store.sessions.load(token, now=AT)
    _unavailable(store, caught)
    assert store.sessions.load(token, now=AT) is not None
    with store.transaction():
        assert store.replay.claim("authn_request", "_k", issuer="sp", expires_at=AT + TTL, now=AT)


def test_postgresql_connection_killed_inside_a_transaction(pg_only: Store, killer: Store,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = pg_only
    monkeypatch.setattr(engine_module, "PG_PING_IDLE_S", 3600.0)
    with pytest.raises(StoreUnavailableError), store.transaction():
        assert store.replay.claim("authn_request", "_t", issuer="sp", expires_at=AT + TTL, now=AT)
        row = store._db.hot.one("SELECT pg_backend_pid()", ())  # on the transaction's connection
        assert row is not None
        _terminate(killer, [row[0]])
        store.audit.record(event="login", outcome="ok", now=AT, event_uid="u-t")
    assert store.replay.claim("authn_request", "_t", issuer="sp", expires_at=AT + TTL, now=AT)  # never committed
    assert store.audit.recent() == []


def test_postgresql_prepares_the_hot_statements(pg_only: Store) -> None:
    store = pg_only
    token = store.sessions.create({"n": 1}, user_id=None, now=AT, ttl=TTL)
    store.engine.dispose()
    for _ in range(6):  # psycopg's prepare_threshold is 5
        assert store.sessions.load(token, now=AT) is not None
    with store.engine.connect() as conn:  # the pool's one connection
        assert conn.connection.dbapi_connection.prepare_threshold == 5  # type: ignore[union-attr]
        prepared = conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements").scalars().all()
    assert any("FROM sessions WHERE id = $1" in s for s in prepared), prepared
