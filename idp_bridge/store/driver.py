"""The per-request statements on the raw DBAPI connection (sqlite3, psycopg), not through SQLAlchemy.

Why: every SSO runs one session read and one write transaction (replay claim, audit row, session), and
SQLAlchemy's execution path costs more CPU than the statements themselves. Measured in-process:
``sessions.load`` took ~127 µs through a SQLAlchemy Connection against ~13 µs on the sqlite3 cursor
(PostgreSQL: 247 vs 56 µs), a transaction with one replay claim ~200 µs, and py-spy put ~25 % of a whole
SSO's CPU in SQLAlchemy (Connection objects, execution contexts, begin/commit events, type processors).
The goal is a round trip that costs little more than its RSA signature, so these few statements (the
hot methods of store/sessions.py, store/replay.py and store/audit.py) run here; everything else keeps
SQLAlchemy Core.

What stays SQLAlchemy's: the connections come from the engine's pool (``Pool.connect()``, what
``engine.raw_connection()`` does), so the pool, its checkout events (store/engine.py's ping after idling)
and SQLite's connect event with its PRAGMAs apply unchanged. The SQL is written once per dialect in the
driver's paramstyle; sqlite3 keeps a prepared statement per SQL text and connection, psycopg prepares a
statement on the server once it ran ``prepare_threshold`` (5) times on a connection.

Values are those SQLAlchemy's column types write and read (store/timeutil.py, JSON), so both paths
share the tables: on SQLite a timestamp is naive-UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` and JSON is
``json.dumps`` text (``None`` too: JSON ``null``, not SQL NULL); on PostgreSQL a timestamptz and
``json.dumps`` text cast ``::json``. Results are aware UTC datetimes and decoded JSON.

Units of work: inside ``transaction()`` every statement runs on its one connection (SQLite:
``BEGIN IMMEDIATE`` before the first, PostgreSQL: psycopg's implicit BEGIN), committed at the end or
rolled back on an exception. Outside one, a statement is its own unit: SQLite runs it in autocommit
mode (the connection has ``isolation_level = None``), PostgreSQL with ``autocommit`` set for that
statement, so no BEGIN/COMMIT is sent (a single statement is atomic on its own).

Faults follow store/db.py: an integrity error passes through (as SQLAlchemy's ``IntegrityError``); any
other driver error invalidates the connection (it never goes back to the pool), and if it was a
disconnect the pool is replaced too (the other connections are likely dead as well); the caller gets
``StoreUnavailableError``. A transaction that saw a fault stays failed: its later statements and its
end raise ``StoreUnavailableError`` too, even if the block swallowed the first one, so part of it can
never commit on another connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NoReturn, cast

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.pool import Pool, PoolProxiedConnection

from idp_bridge.errors import StoreUnavailableError
from idp_bridge.store.engine import safe_url
from idp_bridge.store.timeutil import require_aware

Params = tuple[Any, ...]

# The open driver transaction of this thread/context (at most one, of one Driver).
_OPEN: ContextVar[Transaction | None] = ContextVar("idp_bridge_driver_transaction", default=None)


def statement(template: str) -> dict[str, str]:
    """The SQL for each dialect, by dialect name: in ``template`` ``?`` is a value and ``?json`` a value
    that ``Driver.json`` made (PostgreSQL: cast to json)."""
    return {"sqlite": template.replace("?json", "?"),
            "postgresql": template.replace("?json", "%s::json").replace("?", "%s")}


def _sqlite_stamp(value: datetime) -> str:
    return require_aware(value, "timestamp").replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_read_stamp(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_read_json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _pg_stamp(value: datetime) -> datetime:
    return require_aware(value, "timestamp")


def _pg_read_stamp(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _pg_read_json(value: Any) -> Any:
    return value  # psycopg decodes json itself


class Driver:
    """The hot statements of one engine: ``one()`` (first row or None) and ``count()`` (rows changed)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._pg = self.dialect == "postgresql"
        dbapi = engine.dialect.loaded_dbapi
        self._error: type[Exception] = dbapi.Error
        self._integrity: type[Exception] = dbapi.IntegrityError
        self._begin = None if self._pg else "BEGIN IMMEDIATE"
        self.stamp: Callable[[datetime], Any] = _pg_stamp if self._pg else _sqlite_stamp
        self.read_stamp: Callable[[Any], datetime] = _pg_read_stamp if self._pg else _sqlite_read_stamp
        self.read_json: Callable[[Any], Any] = _pg_read_json if self._pg else _sqlite_read_json

    @staticmethod
    def json(value: Any) -> str:
        return json.dumps(value)

    def in_transaction(self) -> bool:
        tx = _OPEN.get()
        return tx is not None and tx.driver is self

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction for every statement in the block (a nested call joins the open one)."""
        return nullcontext() if self.in_transaction() else Transaction(self)

    def one(self, sql: str, params: Params) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._run(sql, params, True)
        return row

    def count(self, sql: str, params: Params) -> int:
        rows: int = self._run(sql, params, False)
        return rows

    def _run(self, sql: str, params: Params, fetch: bool) -> Any:
        tx = _OPEN.get()
        if tx is not None and tx.driver is self:
            return tx.run(sql, params, fetch)
        pool, conn = self.checkout()
        raw: Any = conn.dbapi_connection
        try:
            if self._pg:
                raw.autocommit = True  # this one statement is the transaction
            cursor = raw.execute(sql, params)
            result = cursor.fetchone() if fetch else cursor.rowcount
            if self._pg:
                raw.autocommit = False
        except BaseException as exc:
            if isinstance(exc, self._integrity):  # the connection is fine: back to the pool as it came
                if self._pg:
                    raw.autocommit = False
                conn.close()
            _reraise(self.failed(pool, conn, exc), exc)
        conn.close()
        return result

    def checkout(self) -> tuple[Pool, PoolProxiedConnection]:
        """A connection from the engine's pool (its checkout events run), and that pool."""
        pool = self.engine.pool
        try:
            return pool, pool.connect()
        except (DBAPIError, DisconnectionError) as exc:
            raise self.unavailable((exc.orig if isinstance(exc, DBAPIError) else None) or exc) from exc
        except Exception as exc:
            if isinstance(exc, self._error):
                raise self.unavailable(exc) from exc
            raise

    def failed(self, pool: Pool, conn: PoolProxiedConnection, exc: BaseException) -> BaseException:
        """What to raise for ``exc`` that happened on ``conn``; unless an integrity error, ``conn`` is discarded."""
        if isinstance(exc, self._integrity):
            return IntegrityError("(hot statement)", None, exc, hide_parameters=True)
        if conn.is_valid:
            disconnect = isinstance(exc, self._error) and self.engine.dialect.is_disconnect(
                cast(Any, exc), conn.dbapi_connection, None)
            conn.invalidate(exc)  # never hand this connection out again
            if disconnect and self.engine.pool is pool:
                self.engine.dispose()  # the pool's other connections are likely dead too: replace them
        return self.unavailable(exc) if isinstance(exc, self._error) else exc

    def unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(f"database {safe_url(self.engine.url)} unavailable: {first_line(exc)}")


class Transaction:
    """A driver transaction; the connection is checked out (and the transaction begun) at its first statement."""

    __slots__ = ("driver", "_pool", "_conn", "_raw", "_fault", "_token")

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._pool: Pool | None = None
        self._conn: PoolProxiedConnection | None = None
        self._raw: Any = None
        self._fault: StoreUnavailableError | None = None  # set once a statement failed: the rest fail too
        self._token: Token[Transaction | None] | None = None

    def __enter__(self) -> None:
        self._token = _OPEN.set(self)

    def run(self, sql: str, params: Params, fetch: bool) -> Any:
        if self._fault is not None:
            raise StoreUnavailableError(self._fault.operator) from self._fault
        if self._raw is None:
            self._start()
        try:
            cursor = self._raw.execute(sql, params)
            return cursor.fetchone() if fetch else cursor.rowcount
        except BaseException as exc:
            self._fail(exc)

    def _start(self) -> None:
        try:
            self._pool, self._conn = self.driver.checkout()
        except StoreUnavailableError as exc:
            self._fault = exc
            raise
        self._raw = self._conn.dbapi_connection
        if self.driver._begin is not None:
            try:
                self._raw.execute(self.driver._begin)
            except BaseException as exc:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> NoReturn:
        assert self._pool is not None and self._conn is not None
        failure = self.driver.failed(self._pool, self._conn, exc)
        if not isinstance(failure, IntegrityError):
            self._raw = None  # invalidated: nothing to commit or roll back
            self._fault = failure if isinstance(failure, StoreUnavailableError) else self.driver.unavailable(exc)
        _reraise(failure, exc)

    def __exit__(self, _exc_type: type[BaseException] | None, exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        assert self._token is not None
        _OPEN.reset(self._token)
        if exc is None and self._fault is not None:  # the block swallowed a fault: none of it commits
            raise StoreUnavailableError(self._fault.operator) from self._fault
        raw, conn = self._raw, self._conn
        if raw is None or conn is None:
            return
        try:
            if exc is None:
                raw.commit()
            else:
                raw.rollback()
        except BaseException as end_exc:
            assert self._pool is not None
            failure = self.driver.failed(self._pool, conn, end_exc)
            if exc is None:
                _reraise(failure, end_exc)
            return  # the block's own exception propagates
        conn.close()


def _reraise(failure: BaseException, exc: BaseException) -> NoReturn:
    if failure is exc:
        raise exc
    raise failure from exc


def first_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
