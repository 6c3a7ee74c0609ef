"""Transactions on the store's engine, with driver failures turned into typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

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
        with self._translated(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite it holds the database write lock from its first statement."""
        with self._translated(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
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
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise StoreUnavailableError(
                f"database {self.describe()} unavailable: {_first_line(exc.orig) or exc}"
            ) from exc


def _first_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
