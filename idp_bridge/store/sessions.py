"""Server-side web sessions: the browser holds a random token, the database only its SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from idp_bridge.store.db import Database
from idp_bridge.store.tables import SessionRow
from idp_bridge.store.timeutil import require_aware

TOKEN_BYTES = 32  # 43 characters of URL-safe base64
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class SessionRecord:
    data: dict[str, Any]
    user_id: str | None
    created_at: datetime
    expires_at: datetime


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_id(token: str) -> str | None:
    """The row id for a token, or None if the token is not one we could have issued."""
    if not _TOKEN_RE.fullmatch(token):
        return None
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _check_ttl(ttl: timedelta) -> None:
    if ttl <= timedelta(0):
        raise ValueError(f"session ttl must be positive, got {ttl}")


# Built once: loading the session is on every request's path.
_LOAD = select(SessionRow.data, SessionRow.user_id, SessionRow.created_at, SessionRow.expires_at).where(
    SessionRow.id == bindparam("row_id"), SessionRow.expires_at > bindparam("now"))


class SessionRepository:
    """``store.sessions``: server-side web sessions by token."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self,
        data: dict[str, Any], *, user_id: str | None, now: datetime, ttl: timedelta
    ) -> str:
        _check_ttl(ttl)
        now = require_aware(now)
        token = new_token()
        values = {
            "id": token_id(token),
            "data": data,
            "user_id": user_id,
            "created_at": now,
            "expires_at": now + ttl,
        }
        with self._db.write() as conn:
            conn.execute(insert(SessionRow).values(values))
        return token

    def load(self, token: str, *, now: datetime) -> SessionRecord | None:
        row_id = token_id(token)
        if row_id is None:
            return None
        now = require_aware(now)
        with self._db.read(one_statement=True) as conn:
            row = conn.execute(_LOAD, {"row_id": row_id, "now": now}).first()
        if row is None:
            return None
        return SessionRecord(
            data=row.data, user_id=row.user_id, created_at=row.created_at, expires_at=row.expires_at
        )

    def save(
        self,
        token: str,
        data: dict[str, Any],
        *,
        user_id: str | None,
        now: datetime,
        ttl: timedelta,
    ) -> bool:
        """Replace a live session's data and slide its expiry. False if it is unknown or expired.

        Never creates a row: a token the server did not issue (or that expired) cannot be
        brought to life by the client (session fixation).
        """
        _check_ttl(ttl)
        row_id = token_id(token)
        if row_id is None:
            return False
        now = require_aware(now)
        with self._db.write() as conn:
            result = conn.execute(
                update(SessionRow)
                .where(SessionRow.id == row_id, SessionRow.expires_at > now)
                .values(data=data, user_id=user_id, expires_at=now + ttl)
            )
        return result.rowcount == 1

    def delete(self, token: str) -> bool:
        row_id = token_id(token)
        if row_id is None:
            return False
        with self._db.write() as conn:
            result = conn.execute(delete(SessionRow).where(SessionRow.id == row_id))
        return result.rowcount == 1
