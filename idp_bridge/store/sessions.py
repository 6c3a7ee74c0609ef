"""Server-side web sessions: the browser holds a random token, the database only its SHA-256."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from idp_bridge.store.db import Database
from idp_bridge.store.driver import statement
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


# On every request's path: run on the raw DBAPI connection (store/driver.py), SQL per dialect.
_LOAD = statement("SELECT data, user_id, created_at, expires_at FROM sessions WHERE id = ? AND expires_at > ?")
_CREATE = statement("INSERT INTO sessions (id, data, user_id, created_at, expires_at) VALUES (?, ?json, ?, ?, ?)")
_SAVE = statement("UPDATE sessions SET data = ?json, user_id = ?, expires_at = ? WHERE id = ? AND expires_at > ?")
_DELETE = statement("DELETE FROM sessions WHERE id = ?")


class SessionRepository:
    """``store.sessions``: server-side web sessions by token."""

    def __init__(self, db: Database) -> None:
        self._hot = db.hot
        d = db.dialect
        self._load, self._create, self._save, self._delete = _LOAD[d], _CREATE[d], _SAVE[d], _DELETE[d]

    def create(
        self,
        data: dict[str, Any], *, user_id: str | None, now: datetime, ttl: timedelta
    ) -> str:
        _check_ttl(ttl)
        now = require_aware(now)
        token = new_token()
        hot = self._hot
        hot.count(self._create, (token_id(token), hot.json(data), user_id, hot.stamp(now), hot.stamp(now + ttl)))
        return token

    def load(self, token: str, *, now: datetime) -> SessionRecord | None:
        row_id = token_id(token)
        if row_id is None:
            return None
        now = require_aware(now)
        hot = self._hot
        row = hot.one(self._load, (row_id, hot.stamp(now)))
        if row is None:
            return None
        data, user_id, created_at, expires_at = row
        return SessionRecord(data=hot.read_json(data), user_id=user_id, created_at=hot.read_stamp(created_at),
                             expires_at=hot.read_stamp(expires_at))

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
        hot = self._hot
        return hot.count(self._save, (hot.json(data), user_id, hot.stamp(now + ttl), row_id, hot.stamp(now))) == 1

    def delete(self, token: str) -> bool:
        row_id = token_id(token)
        if row_id is None:
            return False
        return self._hot.count(self._delete, (row_id,)) == 1
