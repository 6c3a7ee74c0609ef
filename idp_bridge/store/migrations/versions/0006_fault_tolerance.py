"""Audit event ids (spooled events are stored once) and per-customer webhook order (outbox customer + seq).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("event_uid", sa.String(64), nullable=True))
    op.create_index("uq_audit_events_event_uid", "audit_events", ["event_uid"], unique=True)
    with op.batch_alter_table("bindings") as batch:
        batch.add_column(sa.Column("webhook_seq", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("customer", sa.String(128), nullable=True))
        batch.add_column(sa.Column("seq", sa.Integer(), nullable=True))
    op.create_index("ix_outbox_customer", "outbox", ["customer", "delivered_at", "id"])
    # Messages still waiting keep their order: their customer comes from the payload.
    conn = op.get_bind()
    outbox = sa.table("outbox", sa.column("id", sa.Integer()), sa.column("payload", sa.JSON()),
                      sa.column("customer", sa.String(128)), sa.column("delivered_at", sa.DateTime()))
    rows = conn.execute(sa.select(outbox.c.id, outbox.c.payload).where(outbox.c.delivered_at.is_(None))).all()
    for row in rows:
        customer = (row.payload or {}).get("xUserId")
        if isinstance(customer, str):
            conn.execute(sa.update(outbox).where(outbox.c.id == row.id).values(customer=customer[:128]))


def downgrade() -> None:
    op.drop_index("ix_outbox_customer", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("seq")
        batch.drop_column("customer")
    with op.batch_alter_table("bindings") as batch:
        batch.drop_column("webhook_seq")
    op.drop_index("uq_audit_events_event_uid", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("event_uid")
