"""Audit trail rows. The JSON log line is the web layer's job; this only stores.

``detail`` must never hold a password, a token or raw SAML: values under names that look
like secrets are replaced by a marker, and long strings are cut, before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from idp_bridge.store.db import Database
from idp_bridge.store.tables import AuditEventRow
from idp_bridge.store.timeutil import require_aware

OUTCOMES = frozenset({"ok", "refused", "error"})
REDACTED = "[redacted]"
MAX_DETAIL_STRING = 512
MAX_DETAIL_DEPTH = 4
MAX_DETAIL_ITEMS = 50
_SECRET_KEY_RE = re.compile(
    r"pass(word|wd|phrase)?|secret|token|cookie|authorization|private|saml(request|response)|assertion|otp|pin",
    re.IGNORECASE,
)
_COLUMN_LIMITS = {"event": 32, "reason_code": 64, "correlation_id": 128, "sp": 1024, "customer": 256}


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    event: str
    outcome: str
    reason_code: str | None
    correlation_id: str | None
    sp: str | None
    customer: str | None
    detail: dict[str, Any] | None


def scrub_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of ``detail`` with secret-looking keys redacted and sizes bounded."""
    cleaned = _scrub(detail, 0)
    assert isinstance(cleaned, dict)
    return cleaned


def _scrub(value: Any, depth: int) -> Any:
    if depth > MAX_DETAIL_DEPTH:
        return "[too deep]"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:MAX_DETAIL_ITEMS]:
            name = str(key)[:64]
            out[name] = REDACTED if _SECRET_KEY_RE.search(name) else _scrub(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_scrub(item, depth + 1) for item in list(value)[:MAX_DETAIL_ITEMS]]
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= MAX_DETAIL_STRING else text[:MAX_DETAIL_STRING] + "…"


_INSERT = insert(AuditEventRow)  # built once; the values travel as parameters (a row per login)


class AuditRepository:
    """``store.audit``: the audit trail."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(
        self,
        *,
        event: str,
        outcome: str,
        reason_code: str | None = None,
        correlation_id: str | None = None,
        sp: str | None = None,
        customer: str | None = None,
        detail: dict[str, Any] | None = None,
        now: datetime,
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"audit outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
        if not event:
            raise ValueError("audit event name must not be empty")
        values: dict[str, Any] = {
            "at": require_aware(now),
            "event": event,
            "outcome": outcome,
            "reason_code": reason_code,
            "correlation_id": correlation_id,
            "sp": sp,
            "customer": customer,
            "detail": scrub_detail(detail) if detail is not None else None,
        }
        for column, limit in _COLUMN_LIMITS.items():
            if values[column] is not None:
                values[column] = str(values[column])[:limit]
        with self._db.write() as conn:
            conn.execute(_INSERT, values)

    def recent(self, limit: int = 50, *, correlation_id: str | None = None, since: datetime | None = None,
               outcome: str | None = None, event: str | None = None) -> list[AuditEvent]:
        """Newest first, optionally only those with this correlation id, outcome or event, at or after ``since``."""
        limit = max(1, min(limit, 10_000))
        t = AuditEventRow
        stmt = select(t.id, t.at, t.event, t.outcome, t.reason_code, t.correlation_id, t.sp, t.customer, t.detail)
        if correlation_id is not None:
            stmt = stmt.where(t.correlation_id == correlation_id)
        if outcome is not None:
            stmt = stmt.where(t.outcome == outcome)
        if event is not None:
            stmt = stmt.where(t.event == event)
        if since is not None:
            stmt = stmt.where(t.at >= since)
        stmt = stmt.order_by(t.id.desc()).limit(limit)
        with self._db.read() as conn:
            rows = conn.execute(stmt).all()
        return [
            AuditEvent(
                id=r.id,
                at=r.at,
                event=r.event,
                outcome=r.outcome,
                reason_code=r.reason_code,
                correlation_id=r.correlation_id,
                sp=r.sp,
                customer=r.customer,
                detail=r.detail,
            )
            for r in rows
        ]
