"""Key rotation evidence: confirmed publications per SP, SP attribution of metadata fetches, one active key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from idp_bridge.store.timeutil import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "key_publications",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("sp", sa.String(64), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("note", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_key_publications"),
    )
    op.create_index("ix_key_publications_key_id", "key_publications", ["key_id"])
    with op.batch_alter_table("metadata_fetches") as batch:
        batch.add_column(sa.Column("sp", sa.String(64), nullable=True))
    # At most one active key, whatever the callers do: a partial unique index (SQLite and PostgreSQL).
    op.create_index("uq_key_states_one_active", "key_states", ["state"], unique=True,
                    sqlite_where=sa.text("state = 'active'"), postgresql_where=sa.text("state = 'active'"))


def downgrade() -> None:
    op.drop_index("uq_key_states_one_active", table_name="key_states")
    with op.batch_alter_table("metadata_fetches") as batch:
        batch.drop_column("sp")
    op.drop_index("ix_key_publications_key_id", table_name="key_publications")
    op.drop_table("key_publications")
