"""One-time values: the first claim wins, across threads, processes and nodes."""

from __future__ import annotations

from datetime import datetime

from idp_bridge.store.db import Database
from idp_bridge.store.driver import statement
from idp_bridge.store.timeutil import require_aware

KINDS = frozenset({"authn_request", "handoff_jti"})
MAX_VALUE_LENGTH = 512
MAX_ISSUER_LENGTH = 1024


class ReplayRepository:
    """``store.replay``: one-time values (AuthnRequest ids, hand-off JWT ids)."""

    def __init__(self, db: Database) -> None:
        self._hot = db.hot
        self._claim = _CLAIM[db.dialect]

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

        hot = self._hot
        return hot.one(self._claim, (kind, value, issuer, hot.stamp(now), hot.stamp(expires_at),
                                     hot.stamp(now))) is not None


# Every SSO claims one value: run on the raw DBAPI connection (store/driver.py), SQL per dialect.
_CLAIM = statement(
    "INSERT INTO replay_ids (kind, value, issuer, claimed_at, expires_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, value) DO UPDATE SET issuer = excluded.issuer, claimed_at = excluded.claimed_at, "
    "expires_at = excluded.expires_at WHERE replay_ids.expires_at <= ? RETURNING kind")
