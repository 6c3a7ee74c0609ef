"""Shared fixtures. Database: SQLite file by default; PostgreSQL when IDP_BRIDGE_TEST_DATABASE_URL is set.

With the variable set (CI sets it), an unreachable server fails the tests; it never skips them.
PostgreSQL tests share one migrated schema per run (unique name, dropped at the end) and
TRUNCATE its tables before each test; SQLite tests each get a copy of a migrated template file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import URL, make_url, text

from idp_bridge.store import Store
from idp_bridge.store.tables import metadata

TEST_DATABASE_URL_ENV = "IDP_BRIDGE_TEST_DATABASE_URL"


def configured_database_url() -> str | None:
    return os.environ.get(TEST_DATABASE_URL_ENV) or None


def _in_schema(url: str, schema: str) -> str:
    parsed: URL = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return parsed.render_as_string(hide_password=False)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


class _PgSchemas:
    """Creates and drops throwaway schemas on the configured PostgreSQL server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.admin = Store.from_url(server_url)  # StoreUnavailableError here fails the test run
        self.created: list[str] = []

    def create(self) -> str:
        schema = f"idpb_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        with self.admin.engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        self.created.append(schema)
        return _in_schema(self.server_url, schema)

    def drop(self, url: str) -> None:
        schema = make_url(url).query["options"]
        assert isinstance(schema, str)
        name = schema.removeprefix("-csearch_path=")
        with self.admin.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            with self.admin.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def _pg_schemas() -> Iterator[_PgSchemas]:
    server_url = configured_database_url()
    assert server_url is not None
    schemas = _PgSchemas(server_url)
    yield schemas
    schemas.close()


@pytest.fixture(scope="session")
def _migrated_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """PostgreSQL: URL of the run's migrated schema. SQLite: path of a migrated template file."""
    if configured_database_url() is not None:
        schemas: _PgSchemas = request.getfixturevalue("_pg_schemas")
        url = schemas.create()
        store = Store.from_url(url)
        store.upgrade()
        store.dispose()
        yield url
        return
    template = tmp_path_factory.mktemp("db-template") / "bridge.db"
    store = Store.from_url(_sqlite_url(template))
    store.upgrade()
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    yield str(template)


@pytest.fixture
def db_url(_migrated_database: str, tmp_path: Path) -> str:
    """URL of a migrated, empty database for this test alone."""
    if configured_database_url() is not None:
        store = Store.from_url(_migrated_database)
        tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        with store.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        store.dispose()
        return _migrated_database
    path = tmp_path / "bridge.db"
    shutil.copyfile(_migrated_database, path)
    return _sqlite_url(path)


@pytest.fixture
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a database with no tables at all (for migration tests)."""
    if configured_database_url() is not None:
        schemas: _PgSchemas = request.getfixturevalue("_pg_schemas")
        url = schemas.create()
        yield url
        schemas.drop(url)
        return
    yield _sqlite_url(tmp_path / "empty.db")


# argon2id with small parameters: fast enough for hundreds of tests; the default
# parameters are exercised explicitly in tests/test_store.py.
FAST_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated, empty Store."""
    s = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
    yield s
    s.dispose()


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    """Background loops (webhooks, purge, audit spool) an in-process app started in this test are stopped, and
    idle pooled database connections are closed: hundreds of apps in one process would otherwise keep polling
    and exhaust PostgreSQL's connection limit."""
    import gc

    from sqlalchemy.engine import Engine

    from idp_bridge.ops.periodic import RUNNING

    before = set(RUNNING)
    yield
    for loop in set(RUNNING) - before:
        loop.stop(timeout=2.0)
    if not os.environ.get("IDP_BRIDGE_TEST_DATABASE_URL"):
        return  # SQLite: no connection limit to protect
    gc.collect()
    for obj in gc.get_objects():
        if isinstance(obj, Engine) and obj.dialect.name == "postgresql":
            obj.dispose()
