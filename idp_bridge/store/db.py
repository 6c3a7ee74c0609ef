"""Transactions on the store's engine, with driver failures turned into typed errors.

Rule: any database fault (unreachable server, read-only or full files, a lock held past the busy
timeout) leaves here as ``StoreUnavailableError`` (HTTP 503), and the connection it happened on is
thrown away rather than returned to the pool: a SQLite connection opened while the files were
read-only stays read-only for its whole life, and a PostgreSQL connection cut by a restart is dead.
The next transaction opens a fresh connection, so the bridge recovers as soon as the cause is gone.
Integrity errors (a duplicate key) are not faults: they pass through for the caller to judge.

``read(one_statement=True)`` is for a read that is a single statement (the session lookup on every request): one
statement is a consistent snapshot by itself, so it runs without BEGIN/COMMIT (SQLite: autocommit mode;
PostgreSQL: the connection's AUTOCOMMIT level), saving two statements (two round trips on PostgreSQL).

``transaction()`` opens one write transaction that every repository call made inside the block
joins (their ``read()``/``write()`` reuse its connection), so a request can commit several writes
(replay claim, audit row, session) at once; an exception in the block rolls all of them back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from idp_bridge.errors import StoreUnavailableError
from idp_bridge.store.engine import SINGLE_READ_OPTION, WRITE_OPTION, safe_url

# Arbitrary constant key for pg_advisory_xact_lock: serialises schema upgrades across workers.
PG_MIGRATION_LOCK_KEY = 0x1D_B41D_6E

# The open ``transaction()`` of this thread/context: (database, connection).
_AMBIENT: ContextVar[tuple[Database, Connection] | None] = ContextVar("idp_bridge_transaction", default=None)


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def describe(self) -> str:
        return safe_url(self.engine.url)

    def _ambient(self) -> Connection | None:
        held = _AMBIENT.get()
        return held[1] if held is not None and held[0] is self else None

    @contextmanager
    def read(self, *, one_statement: bool = False) -> Iterator[Connection]:
        """A read transaction (inside ``transaction()``: that one). ``one_statement``: the block runs ONE
        statement, so no BEGIN/COMMIT is needed around it."""
        ambient = self._ambient()
        if ambient is not None:
            yield ambient
            return
        with self._transaction(write=False, single=one_statement) as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction joined by every read/write in the block (nested calls join the outer one)."""
        ambient = self._ambient()
        if ambient is not None:
            yield ambient
            return
        with self.write() as conn:
            token = _AMBIENT.set((self, conn))
            try:
                yield conn
            finally:
                _AMBIENT.reset(token)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the database write lock from its first statement."""
        ambient = self._ambient()
        if ambient is not None:
            yield ambient
            return
        with self._transaction(write=True) as conn:
            yield conn

    @contextmanager
    def migration(self) -> Iterator[Connection]:
        """A write transaction that also excludes concurrent migrations (several workers starting at once)."""
        with self.write() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_KEY})
            yield conn

    def ping(self) -> None:
        with self.read() as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def _transaction(self, *, write: bool, single: bool = False) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE_OPTION: True})
                elif single:
                    if self.dialect == "postgresql":
                        conn.execution_options(isolation_level="AUTOCOMMIT")
                    else:
                        conn.execution_options(**{SINGLE_READ_OPTION: True})
                try:
                    with conn.begin():
                        yield conn
                except (DBAPIError, sqlite3.Error) as exc:
                    if not isinstance(exc, IntegrityError) and not conn.invalidated:
                        conn.invalidate(exc)  # never hand this connection out again
                    raise
        except IntegrityError:
            raise
        except (DBAPIError, sqlite3.Error) as exc:
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            raise StoreUnavailableError(
                f"database {self.describe()} unavailable: {_first_line(orig) or exc}"
            ) from exc


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
