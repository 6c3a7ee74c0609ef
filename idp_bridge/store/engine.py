"""Create the SQLAlchemy engine for a database URL (SQLite file or PostgreSQL).

SQLite is the embedded default and must be safe with several gunicorn worker *processes*
on one machine: WAL journal (readers never block the writer), a busy timeout so a writer
waits for the lock instead of failing, and explicit ``BEGIN IMMEDIATE`` for write
transactions so a transaction never reads a snapshot and then fails to upgrade to a
writer (SQLITE_BUSY_SNAPSHOT, which the busy handler cannot retry).

Faults (read-only files, a full disk, a lock held too long) are errors, never crashes: the
database file is not memory-mapped (``mmap_size = 0``), and store/db.py discards a connection
that failed so the next one starts fresh.

Engines must not cross ``fork()``: a web server that preloads the app calls
``Store.dispose()`` in each worker after forking.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from idp_bridge.errors import ConfigError

SQLITE_BUSY_TIMEOUT_MS = 5000
PG_CONNECT_TIMEOUT_S = 5
#: A pooled PostgreSQL connection unused for this long is pinged before it is handed out.
PG_PING_IDLE_S = 1.0
# Execution option a write transaction sets so SQLite takes the write lock at BEGIN.
WRITE_OPTION = "idp_bridge_write"


def parse_url(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"database URL is not a valid SQLAlchemy URL: expected e.g. sqlite:///path/to/bridge.db or "
            f"postgresql+psycopg://user@host:5432/dbname ({exc})"
        ) from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database URL {safe_url(parsed)!r} uses backend {backend!r}; expected sqlite or postgresql"
        )
    if parsed.drivername == "postgresql":
        # Plain "postgresql://" could pick psycopg2, which we do not ship.
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise ConfigError(
            f"database URL {safe_url(parsed)!r} uses driver {parsed.get_driver_name()!r}; expected postgresql+psycopg"
        )
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL for messages and logs: password hidden."""
    return make_url(url).render_as_string(hide_password=True)


def create_store_engine(url: str | URL, **kwargs: Any) -> Engine:
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    return _postgresql_engine(parsed, **kwargs)


def _postgresql_engine(url: URL, **kwargs: Any) -> Engine:
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only if it sat unused for ``PG_PING_IDLE_S``.

    ``pool_pre_ping`` pings on every checkout: a round trip (and backend CPU) on each transaction, two per
    SSO. A connection used a moment ago is almost surely alive; one that idled may belong to a server that
    restarted meanwhile, so it is pinged, and a dead one is replaced before the request sees it. If the
    server restarts between two requests less than ``PG_PING_IDLE_S`` apart, that next request fails with
    a 503 and the whole pool is replaced on the disconnect (by SQLAlchemy, or store/driver.py for the
    per-request statements): the following ones reconnect.
    """

    def on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PG_PING_IDLE_S:
            return  # just opened, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure means: use another connection
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc

    event.listen(engine, "checkin", on_checkin)
    event.listen(engine, "checkout", on_checkout)


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:")
    if not in_memory and not database.startswith("file:"):
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise ConfigError(
                f"SQLite database {database!r}: directory {str(parent)!r} does not exist; create it or fix the URL"
            )
        _create_owner_only(Path(database).expanduser())
    connect_args: dict[str, Any] = {
        "check_same_thread": False,
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
        **kwargs.pop("connect_args", {}),
    }
    if in_memory:
        # One shared connection, or every checkout would see its own empty database.
        kwargs.setdefault("poolclass", StaticPool)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _create_owner_only(path: Path) -> None:
    """Create a missing database file with mode 0600: it holds sessions, password hashes and customer data.

    SQLite gives the ``-wal``, ``-shm`` and ``-journal`` files the mode of the database file.
    An existing file keeps its mode (the operator's choice; ``idp-bridge check`` reads keys, not this).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"SQLite database {str(path)!r}: cannot create the file: {exc}") from exc
    os.close(fd)


def _sqlite_on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # Take BEGIN out of the driver's hands (it would defer it, and skip it before DDL);
    # _sqlite_on_begin emits it instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # Never map the database file: a page of a mapped file that cannot be written back (the file
        # made read-only, truncated or its disk full) kills the process with SIGBUS instead of an error.
        cursor.execute("PRAGMA mmap_size = 0")
        cursor.execute("PRAGMA foreign_keys = ON")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is not None and str(mode[0]).lower() not in ("wal", "memory"):
            raise ConfigError(
                f"SQLite refused WAL journal mode (got {mode[0]!r}); is the file on a network share?"
            )
        # Safe with WAL: a power cut may lose the last transactions, never corrupt the file.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    options = conn.get_execution_options()
    conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION) else "BEGIN")
