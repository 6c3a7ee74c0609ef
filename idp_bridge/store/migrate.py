"""Alembic, run from code: no alembic.ini in the user's working directory.

The scripts live in this package (``migrations/``), so an installed wheel can upgrade a
database with nothing else on disk.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from idp_bridge.store.db import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@cache
def head_revision() -> str:
    """The newest revision this package ships (read once: the scripts do not change while we run)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError(f"no Alembic revisions found under {MIGRATIONS_DIR}")
    return head


def upgrade(db: Database, revision: str = "head") -> None:
    # One transaction (PostgreSQL and SQLite both have transactional DDL) under a lock,
    # so workers that start together run it once and never see half a schema.
    with db.migration() as conn:
        command.upgrade(alembic_config(conn), revision)


def current_revision(db: Database) -> str | None:
    with db.read() as conn:
        return MigrationContext.configure(conn).get_current_revision()
