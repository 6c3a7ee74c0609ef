"""One-time values: the first claim wins, across threads, processes and nodes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Insert, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from idp_bridge.store.db import Database
from idp_bridge.store.tables import ReplayId
from idp_bridge.store.timeutil import require_aware

ReplayTable: Table = ReplayId.__table__  # type: ignore[assignment]
KINDS = frozenset({"authn_request", "handoff_jti"})
MAX_VALUE_LENGTH = 512
MAX_ISSUER_LENGTH = 1024


class ReplayRepository:
    """``store.replay``: one-time values (AuthnRequest ids, hand-off JWT ids)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._upsert = _claim_statement(db.dialect)

    def claim(self, kind: str, value: str, *, issuer: str, expires_at: datetime, now: datetime) -> bool:
        """Record ``value`` as used; True for the first claim, False if it is already held.

        One statement does it: ``INSERT ... ON CONFLICT (kind, value) DO UPDATE ... WHERE
        replay_ids.expires_at <= now RETURNING``. A fresh value inserts; a held value whose
        expiry has passed is taken over; a held value still valid leaves the row alone and
        returns no row. PostgreSQL locks the conflicting row and re-checks the WHERE against the
        latest committed version, so two racing reclaimers cannot both win; SQLite runs the
        statement under its single write lock.
        """
        if kind not in KINDS:
            raise ValueError(f"replay kind must be one of {sorted(KINDS)}, got {kind!r}")
        if not value or len(value) > MAX_VALUE_LENGTH:
            raise ValueError(f"replay value must be 1..{MAX_VALUE_LENGTH} characters, got {len(value)}")
        if len(issuer) > MAX_ISSUER_LENGTH:
            raise ValueError(f"issuer longer than {MAX_ISSUER_LENGTH} characters")
        now = require_aware(now)
        expires_at = require_aware(expires_at, "expires_at")

        row = {"kind": kind, "value": value, "issuer": issuer, "claimed_at": now, "expires_at": expires_at,
               "now": now}
        with self._db.write() as conn:
            return conn.execute(self._upsert, row).first() is not None


def _claim_statement(dialect: str) -> Insert:
    """The claim upsert, built once per store with bound parameters: a hot path (every SSO) that
    should not pay for building and cache-keying the statement on each call."""
    table = ReplayTable
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = dialect_insert(table).values(kind=bindparam("kind"), value=bindparam("value"), issuer=bindparam("issuer"),
                                        claimed_at=bindparam("claimed_at"), expires_at=bindparam("expires_at"))
    upsert: Insert = stmt.on_conflict_do_update(
        index_elements=[table.c.kind, table.c.value],
        set_={
            "issuer": stmt.excluded.issuer,
            "claimed_at": stmt.excluded.claimed_at,
            "expires_at": stmt.excluded.expires_at,
        },
        where=table.c.expires_at <= bindparam("now"),
    ).returning(table.c.kind)
    return upsert
