"""Huawei binding notices applied at most once: pending first-login jumps and the digests of applied notices.

Rule: a *bind* notice changes state only when it is new (its digest is not recorded) and consumes the
pending first-login jump the bridge recorded for that customer (``/go`` with ``isFirstLogin=true``, within
the window); an *unbind* only when it is new and names the customer's current binding (bound, same
``domainId``). Checks, state change, digest and webhook are one transaction: a notice racing itself on two
nodes is applied once, and a refused notice leaves nothing behind (not even its digest).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from idp_bridge.store.bindings import BindingTable, queue_webhook, upsert_binding
from idp_bridge.store.db import Database
from idp_bridge.store.tables import BindingJumpRow, BindingNoticeRow
from idp_bridge.store.timeutil import require_aware

JumpTable: Table = BindingJumpRow.__table__  # type: ignore[assignment]
NoticeTable: Table = BindingNoticeRow.__table__  # type: ignore[assignment]

APPLIED = "applied"  # a new notice, accepted (``changed`` False when the state already was so)
REPLAYED = "replayed"  # this very notice was applied before
UNSOLICITED = "unsolicited"  # a bind with no pending first-login jump for the customer (none, used or expired)
NOT_CURRENT = "not_current"  # an unbind that does not name the customer's current binding


@dataclass(frozen=True)
class NoticeResult:
    outcome: str
    changed: bool
    webhook_key: str | None


class _Refused(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


class BindGuardRepository:
    """``store.bind_guard``: pending first-login jumps and the digests of applied Huawei notices."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record_jump(self, x_user_id: str, *, sp: str | None, now: datetime, expires_at: datetime) -> None:
        """Remember that the bridge sent ``x_user_id`` to Huawei with ``isFirstLogin=true`` (one row per customer)."""
        now, expires_at = require_aware(now), require_aware(expires_at, "expires_at")
        if not x_user_id or len(x_user_id) > 128:
            raise ValueError(f"x_user_id must be 1..128 characters, got {len(x_user_id)}")
        row = {"x_user_id": x_user_id, "sp": (sp or None) and sp[:64], "jumped_at": now, "expires_at": expires_at}
        stmt = _insert(self._db.dialect)(JumpTable).values(row)
        upsert: Insert = stmt.on_conflict_do_update(index_elements=[JumpTable.c.x_user_id],
                                                    set_={k: stmt.excluded[k] for k in row if k != "x_user_id"})
        with self._db.write() as conn:
            conn.execute(upsert)

    def pending_jump(self, x_user_id: str, *, now: datetime) -> datetime | None:
        """When the customer's pending first-login jump expires, or None when there is none."""
        with self._db.read() as conn:
            row = conn.execute(select(JumpTable.c.expires_at).where(
                JumpTable.c.x_user_id == x_user_id, JumpTable.c.expires_at > require_aware(now))).first()
        return row[0] if row is not None else None

    def apply_notice(self, *, digest: str, x_user_id: str, bound: bool, domain_id: str | None,
                     domain_name: str | None, bind_action: str, payload: dict[str, Any] | None, source: str,
                     now: datetime, notify: bool = True) -> NoticeResult:
        """Apply one verified Huawei notice under the rule above; return what happened."""
        now = require_aware(now)
        if len(digest) != 64 or not x_user_id or len(x_user_id) > 128:
            raise ValueError("digest must be 64 hex characters and x_user_id 1..128 characters")
        try:
            with self._db.write() as conn:
                new = _insert(self._db.dialect)(NoticeTable).values(
                    digest=digest, x_user_id=x_user_id, bind_action=bind_action, domain_id=domain_id, applied_at=now
                ).on_conflict_do_nothing(index_elements=[NoticeTable.c.digest]).returning(NoticeTable.c.digest)
                if conn.execute(new).first() is None:
                    return NoticeResult(REPLAYED, False, None)
                if bound:
                    jump = delete(JumpTable).where(JumpTable.c.x_user_id == x_user_id, JumpTable.c.expires_at > now)
                    if conn.execute(jump.returning(JumpTable.c.x_user_id)).first() is None:
                        raise _Refused(UNSOLICITED)  # rolls back the digest: only applied notices are remembered
                    changed, key = upsert_binding(conn, dialect=self._db.dialect, x_user_id=x_user_id, bound=True,
                                                  domain_id=domain_id, domain_name=domain_name, bind_action=bind_action,
                                                  payload=payload, source=source, now=now, notify=notify)
                    return NoticeResult(APPLIED, changed, key)
                t = BindingTable
                if domain_id is None:
                    raise _Refused(NOT_CURRENT)
                unbind = update(t).where(t.c.x_user_id == x_user_id, t.c.bound.is_(True), t.c.domain_id == domain_id
                                         ).values(bound=False, bind_action=bind_action, payload=payload, updated_at=now)
                row = conn.execute(unbind.returning(t.c.domain_name)).first()
                if row is None:
                    raise _Refused(NOT_CURRENT)
                key = queue_webhook(conn, x_user_id=x_user_id, bound=False, domain_id=domain_id,
                                    domain_name=domain_name or row[0], bind_action=bind_action, source=source,
                                    now=now) if notify else None
                return NoticeResult(APPLIED, True, key)
        except _Refused as refused:
            return NoticeResult(refused.outcome, False, None)
