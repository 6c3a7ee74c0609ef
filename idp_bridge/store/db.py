"""Transactions on the store's engine, with driver failures turned into typed errors.

Rule: any database fault (unreachable server, read-only or full files, a lock held past the busy
timeout) leaves here as ``StoreUnavailableError`` (HTTP 503), and the connection it happened on is
thrown away rather than returned to the pool: a SQLite connection opened while the files were
read-only stays read-only for its whole life, and a PostgreSQL connection cut by a restart is dead.
The next transaction opens a fresh connection, so the bridge recovers as soon as the cause is gone.
Integrity errors (a duplicate key) are not faults: they pass through for the caller to judge.

The statements on every request's path (``sessions.*``, ``replay.claim``, ``audit.record``) skip
SQLAlchemy's execution machinery: they run on the raw DBAPI connection (store/driver.py), under the
same rules. ``transaction()`` is that driver's transaction: the hot calls made inside the block join
it, so a request commits its replay claim, audit row and session at once, and an exception in the
block rolls all of them back. ``read()``/``write()`` inside it raise RuntimeError: they would run on a
second connection, outside the transaction (and on SQLite wait for the write lock it holds).
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from idp_bridge.errors import StoreUnavailableError
from idp_bridge.store.driver import Driver, first_line
from idp_bridge.store.engine import WRITE_OPTION, safe_url

# Arbitrary constant key for pg_advisory_xact_lock: serialises schema upgrades across workers.
PG_MIGRATION_LOCK_KEY = 0x1D_B41D_6E


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.hot = Driver(engine)

    def describe(self) -> str:
        return safe_url(self.engine.url)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction."""
        self._outside_transaction("read")
        with self._transaction(write=False) as conn:
            yield conn

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction for the hot statements in the block (nested calls join the outer one)."""
        return self.hot.transaction()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the database write lock from its first statement."""
        self._outside_transaction("write")
        with self._transaction(write=True) as conn:
            yield conn

    def _outside_transaction(self, method: str) -> None:
        if self.hot.in_transaction():
            raise RuntimeError(
                f"Database.{method}() called by {_caller()} inside store.transaction(): only the hot statements "
                "(replay.claim, audit.record, sessions.load/create/save/delete) run in it; this would use a "
                "second connection outside the transaction")

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
                f"database {self.describe()} unavailable: {first_line(orig) or exc}"
            ) from exc


def _caller() -> str:
    """The first function up the stack outside this module and contextlib (for the RuntimeError above)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename in (__file__, _CONTEXTLIB):
        frame = frame.f_back
    return frame.f_code.co_qualname


_CONTEXTLIB = contextlib.__file__
