"""Which partner customers are bound to a Huawei account. Each change also queues a webhook, atomically,
numbered per customer (``seq`` 1, 2, 3, ...) so the platform can tell a later change from an earlier one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Table, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from idp_bridge.store.db import Database
from idp_bridge.store.tables import BindingRow, OutboxRow
from idp_bridge.store.timeutil import require_aware

BindingTable: Table = BindingRow.__table__  # type: ignore[assignment]
WEBHOOK_TOPIC = "binding.changed"


@dataclass(frozen=True)
class Binding:
    x_user_id: str
    domain_id: str | None
    domain_name: str | None
    bind_action: str | None
    bound: bool
    payload: dict[str, Any] | None
    updated_at: datetime


def _binding(row: Any) -> Binding:
    return Binding(row.x_user_id, row.domain_id, row.domain_name, row.bind_action, row.bound, row.payload,
                   row.updated_at)


class BindingRepository:
    """``store.bindings``: customer bindings (each change queues a webhook)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def apply(self, *, x_user_id: str, bound: bool, domain_id: str | None = None, domain_name: str | None = None,
              bind_action: str | None = None, payload: dict[str, Any] | None = None, source: str, now: datetime,
              notify: bool = True) -> tuple[bool, str | None]:
        """Store the binding state; return (changed, idempotency key of the queued webhook or None).

        Idempotent: the same state again changes nothing and queues nothing. One statement decides
        (``INSERT ... ON CONFLICT DO UPDATE ... WHERE state differs RETURNING``): PostgreSQL re-checks
        the WHERE on the latest row version under its row lock, SQLite holds its write lock, so two
        copies of one notification racing on two nodes make exactly one change.
        """
        now = require_aware(now)
        if not x_user_id or len(x_user_id) > 128:
            raise ValueError(f"x_user_id must be 1..128 characters, got {len(x_user_id)}")
        with self._db.write() as conn:
            return upsert_binding(conn, dialect=self._db.dialect, x_user_id=x_user_id, bound=bound,
                                  domain_id=domain_id, domain_name=domain_name, bind_action=bind_action,
                                  payload=payload, source=source, now=now, notify=notify)

    def get(self, x_user_id: str) -> Binding | None:
        with self._db.read() as conn:
            row = conn.execute(select(BindingRow.__table__).where(BindingTable.c.x_user_id == x_user_id)).first()
        return _binding(row) if row is not None else None

    def all(self, *, limit: int = 1000, only_bound: bool = False) -> list[Binding]:
        query = select(BindingTable).order_by(BindingTable.c.x_user_id).limit(limit)
        if only_bound:
            query = query.where(BindingTable.c.bound.is_(True))
        with self._db.read() as conn:
            return [_binding(r) for r in conn.execute(query)]


def upsert_binding(conn: Connection, *, dialect: str, x_user_id: str, bound: bool, domain_id: str | None,
                   domain_name: str | None, bind_action: str | None, payload: dict[str, Any] | None, source: str,
                   now: datetime, notify: bool) -> tuple[bool, str | None]:
    """``BindingRepository.apply`` inside the caller's write transaction."""
    t = BindingTable
    row = {"x_user_id": x_user_id, "domain_id": domain_id, "domain_name": domain_name, "bind_action": bind_action,
           "payload": payload, "bound": bound, "updated_at": now}
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = dialect_insert(t).values(row)
    upsert: Insert = stmt.on_conflict_do_update(
        index_elements=[t.c.x_user_id],
        set_={k: stmt.excluded[k] for k in row if k != "x_user_id"},
        where=or_(t.c.bound.is_distinct_from(stmt.excluded.bound),
                  t.c.domain_id.is_distinct_from(stmt.excluded.domain_id),
                  t.c.domain_name.is_distinct_from(stmt.excluded.domain_name)),
    ).returning(t.c.x_user_id)
    if conn.execute(upsert).first() is None:
        return False, None
    if not notify:
        return True, None
    return True, queue_webhook(conn, x_user_id=x_user_id, bound=bound, domain_id=domain_id, domain_name=domain_name,
                               bind_action=bind_action, source=source, now=now)


def queue_webhook(conn: Connection, *, x_user_id: str, bound: bool, domain_id: str | None, domain_name: str | None,
                  bind_action: str | None, source: str, now: datetime) -> str:
    """Queue the ``binding.changed`` webhook in the caller's transaction; return its idempotency key.

    Called right after the customer's binding row was written in the same transaction, so that row is
    locked until commit and the customer's webhooks are numbered one after another (``seq`` 1, 2, 3, ...).
    """
    t = BindingTable
    seq = conn.execute(update(t).where(t.c.x_user_id == x_user_id)
                       .values(webhook_seq=t.c.webhook_seq + 1).returning(t.c.webhook_seq)).scalar_one()
    key = f"binding:{x_user_id}:{uuid.uuid4().hex}"
    conn.execute(insert(OutboxRow).values(
        topic=WEBHOOK_TOPIC, dedupe_key=key, created_at=now, attempts=0, next_attempt_at=now,
        customer=x_user_id, seq=seq,
        payload={"event": WEBHOOK_TOPIC, "id": key, "seq": seq, "xUserId": x_user_id, "bound": bound,
                 "domainId": domain_id, "domainName": domain_name, "bindAction": bind_action,
                 "source": source, "at": now.isoformat()}))
    return key
