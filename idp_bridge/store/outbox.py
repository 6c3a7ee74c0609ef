"""The durable webhook outbox: claim due messages with a lease, mark them delivered or retry later.

A message is claimed by one compare-and-set ``UPDATE ... WHERE id = :id AND delivered_at IS NULL
AND next_attempt_at <= now AND <no earlier undelivered message of the same customer>`` that pushes
``next_attempt_at`` one lease ahead: of several workers or nodes, exactly one gets rowcount 1. If
that worker dies mid-delivery the lease runs out and another retries with the same idempotency key,
so the receiver can still show each change once.

Order: a customer's messages go out one at a time in the order they were queued (``id``; the
per-customer ``seq`` numbers them): the next is claimable only once the one before it is delivered,
so a later change never reaches the platform before an earlier one, whatever fails or retries.
Different customers do not wait for each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, exists, func, select, update

from idp_bridge.store.db import Database
from idp_bridge.store.tables import OutboxRow
from idp_bridge.store.timeutil import require_aware

OutboxTable: Table = OutboxRow.__table__  # type: ignore[assignment]
MAX_ERROR = 1000


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    topic: str
    dedupe_key: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int  # including the current one, once claimed
    next_attempt_at: datetime
    delivered_at: datetime | None
    last_error: str | None
    customer: str | None = None
    seq: int | None = None


def _message(row: Any) -> OutboxMessage:
    return OutboxMessage(row.id, row.topic, row.dedupe_key, row.payload, row.created_at, row.attempts,
                         row.next_attempt_at, row.delivered_at, row.last_error, row.customer, row.seq)


def _claimable(t: Table, now: datetime) -> Any:
    """Due, undelivered, and first in its customer's line."""
    earlier = OutboxTable.alias("earlier")
    blocked = exists().where(earlier.c.customer == t.c.customer, earlier.c.delivered_at.is_(None),
                             earlier.c.id < t.c.id)
    return and_(t.c.delivered_at.is_(None), t.c.next_attempt_at <= now, ~blocked)


class OutboxRepository:
    """``store.outbox``: the durable webhook outbox."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def claim_next(self, *, now: datetime, lease: timedelta) -> OutboxMessage | None:
        """Claim the oldest claimable message for ``lease`` (the caller must finish with it before then)."""
        now = require_aware(now)
        t = OutboxTable
        with self._db.read() as conn:
            ids = [r.id for r in conn.execute(select(t.c.id).where(_claimable(t, now)).order_by(t.c.id).limit(20))]
        for message_id in ids:
            with self._db.write() as conn:
                row = conn.execute(
                    update(t).where(t.c.id == message_id, _claimable(t, now))
                    .values(next_attempt_at=now + lease, attempts=t.c.attempts + 1)
                    .returning(*t.c)).first()
            if row is not None:
                return _message(row)
        return None

    def claim_due(self, *, now: datetime, lease: timedelta, limit: int = 20) -> list[OutboxMessage]:
        """Claim up to ``limit`` messages at once (at most one per customer: each is first in its line)."""
        claimed: list[OutboxMessage] = []
        while len(claimed) < limit:
            message = self.claim_next(now=now, lease=lease)
            if message is None:
                break
            claimed.append(message)
        return claimed

    def mark_delivered(self, message_id: int, *, now: datetime) -> bool:
        t = OutboxTable
        with self._db.write() as conn:
            result = conn.execute(update(t).where(t.c.id == message_id, t.c.delivered_at.is_(None))
                                  .values(delivered_at=require_aware(now), last_error=None))
        return result.rowcount == 1

    def mark_failed(self, message_id: int, *, error: str, retry_at: datetime) -> None:
        t = OutboxTable
        with self._db.write() as conn:
            conn.execute(update(t).where(t.c.id == message_id, t.c.delivered_at.is_(None))
                         .values(last_error=error[:MAX_ERROR], next_attempt_at=require_aware(retry_at, "retry_at")))

    def messages(self, *, pending_only: bool = False, limit: int = 100) -> list[OutboxMessage]:
        t = OutboxTable
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        if pending_only:
            query = query.where(t.c.delivered_at.is_(None))
        with self._db.read() as conn:
            return [_message(r) for r in conn.execute(query)]

    def pending_count(self) -> int:
        t = OutboxTable
        with self._db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(t).where(t.c.delivered_at.is_(None))).scalar_one())

    def pending_stats(self, *, now: datetime) -> tuple[int, float | None]:
        """How many messages wait for delivery, and the age in seconds of the oldest (None: none wait)."""
        require_aware(now, "now")
        t = OutboxTable
        with self._db.read() as conn:
            count, oldest = conn.execute(select(func.count(), func.min(t.c.created_at))
                                         .where(t.c.delivered_at.is_(None))).one()
        if not count or oldest is None:
            return 0, None
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        return int(count), max(0.0, (now - oldest).total_seconds())
