"""Transactions on the store's engine, with driver failures turned into typed errors.

Rule: any database fault (unreachable server, read-only or full files, a lock held past the busy
timeout) leaves here as ``StoreUnavailableError`` (HTTP 503), and the connection it happened on is
thrown away rather than returned to the pool: a SQLite connection opened while the files were
read-only stays read-only for its whole life, and a PostgreSQL connection cut by a restart is dead.
The next transaction opens a fresh connection, so the bridge recovers as soon as the cause is gone.
Integrity errors (a duplicate key) are not faults: they pass through for the caller to judge.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from idp_bridge.errors import StoreUnavailableError
from idp_bridge.store.engine import WRITE_OPTION, safe_url

# Arbitrary constant key for pg_advisory_xact_lock: serialises schema upgrades across workers.
PG_MIGRATION_LOCK_KEY = 0x1D_B41D_6E


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def describe(self) -> str:
        return safe_url(self.engine.url)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._transaction(write=False) as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the database write lock from its first statement."""
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
    def _transaction(self, *, write: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if write:
                    conn.execution_options(**{WRITE_OPTION: True})
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
