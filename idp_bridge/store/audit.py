"""Audit trail rows. The JSON log line is the web layer's job; this only stores.

``detail`` must never hold a password, a token or raw SAML: values under names that look
like secrets are replaced by a marker, and long strings are cut, before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from idp_bridge.store.db import Database
from idp_bridge.store.driver import statement
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
_COLUMN_LIMITS = {"event_uid": 64, "event": 32, "reason_code": 64, "correlation_id": 128, "sp": 1024, "customer": 256}


class PreparedRow(NamedTuple):
    """One event as ``AuditRepository.record_prepared`` inserts it: checked, bounded, scrubbed, every value
    already in the database's form. Made by ``AuditRepository.prepare``, before the write transaction."""

    dialect: str
    params: tuple[Any, ...]
    event_uid: str | None


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


@lru_cache(maxsize=1024)
def _is_secret_name(name: str) -> bool:
    """Whether values under ``name`` are redacted (names are mostly the same few, so the answer is kept)."""
    return _SECRET_KEY_RE.search(name) is not None


def _scrub(value: Any, depth: int) -> Any:
    if depth > MAX_DETAIL_DEPTH:
        return "[too deep]"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        shallow = depth < MAX_DETAIL_DEPTH  # a value one level down is still kept (not "[too deep]")
        for key, item in islice(value.items(), MAX_DETAIL_ITEMS):
            name = str(key)[:64]
            if _is_secret_name(name):
                out[name] = REDACTED
            elif shallow and type(item) is str and len(item) <= MAX_DETAIL_STRING:  # the usual case: as it is
                out[name] = item
            else:
                out[name] = _scrub(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_scrub(item, depth + 1) for item in islice(value, MAX_DETAIL_ITEMS)]
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= MAX_DETAIL_STRING else text[:MAX_DETAIL_STRING] + "…"


def _values(*, event: str, outcome: str, reason_code: str | None = None, correlation_id: str | None = None,
            sp: str | None = None, customer: str | None = None, detail: dict[str, Any] | None = None,
            at: datetime | str, event_uid: str | None = None, scrubbed: bool = False) -> dict[str, Any]:
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
    if not event:
        raise ValueError("audit event name must not be empty")
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    values: dict[str, Any] = {
        "at": require_aware(at),
        "event": event,
        "outcome": outcome,
        "reason_code": reason_code,
        "correlation_id": correlation_id,
        "sp": sp,
        "customer": customer,
        "detail": scrub_detail(detail) if detail is not None and not scrubbed else detail,
        "event_uid": event_uid,
    }
    for column, limit in _COLUMN_LIMITS.items():
        if values[column] is not None:
            values[column] = str(values[column])[:limit]
    return values


# Built once; the values travel as parameters. With an event_uid, a second copy is ignored (without one,
# nothing conflicts). ``record`` (on every login's path) runs on the raw DBAPI connection (store/driver.py).
_RECORD = statement(
    "INSERT INTO audit_events (at, event, outcome, reason_code, correlation_id, sp, customer, detail, event_uid) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?json, ?) ON CONFLICT (event_uid) DO NOTHING")
_INSERT_ONCE = {name: dialect.insert(AuditEventRow).on_conflict_do_nothing(index_elements=["event_uid"])
                for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}


class AuditRepository:
    """``store.audit``: the audit trail."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._hot = db.hot
        self._record = _RECORD[db.dialect]

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
        event_uid: str | None = None,
    ) -> bool:
        """Store one event; with ``event_uid`` a second copy of the same event is ignored (False)."""
        return self.record_prepared(self.prepare(
            event=event, outcome=outcome, reason_code=reason_code, correlation_id=correlation_id, sp=sp,
            customer=customer, detail=detail, now=now, event_uid=event_uid))

    def prepare(
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
        event_uid: str | None = None,
        scrubbed: bool = False,
    ) -> PreparedRow:
        """The row ``record`` would insert, for ``record_prepared``; ValueError if it is not one (unknown
        outcome, no event name, naive ``now``). ``scrubbed``: ``detail`` already came from ``scrub_detail``."""
        v = _values(event=event, outcome=outcome, reason_code=reason_code, correlation_id=correlation_id,
                    sp=sp, customer=customer, detail=detail, at=now, event_uid=event_uid, scrubbed=scrubbed)
        hot = self._hot
        return PreparedRow(self._db.dialect, (hot.stamp(v["at"]), v["event"], v["outcome"], v["reason_code"],
                                              v["correlation_id"], v["sp"], v["customer"], hot.json(v["detail"]),
                                              v["event_uid"]), v["event_uid"])

    def record_prepared(self, row: PreparedRow) -> bool:
        """Store a row from ``prepare`` (of a store of this kind); False if its ``event_uid`` is already stored."""
        if row.dialect != self._db.dialect:
            raise ValueError(f"an audit row prepared for {row.dialect} cannot be stored in {self._db.dialect}")
        return self._hot.count(self._record, row.params) == 1

    def restore(self, events: Sequence[Mapping[str, Any]]) -> int:
        """Store events written down while the database was away (keys as ``record`` takes them, ``now``
        as ``at``, each with its ``event_uid``), in one transaction; those already stored are skipped.
        Returns how many were new."""
        rows = [_values(**e) for e in events]
        if any(r["event_uid"] is None for r in rows):
            raise ValueError("a restored audit event needs its event_uid")
        if not rows:
            return 0
        once = _INSERT_ONCE[self._db.dialect]
        with self._db.write() as conn:
            return sum(conn.execute(once, row).rowcount for row in rows)

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
