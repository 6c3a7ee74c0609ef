"""Binding-notice replay guard: pending first-login jumps and the digests of applied notices.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from idp_bridge.store.timeutil import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "binding_jumps",
        sa.Column("x_user_id", sa.String(128), nullable=False),
        sa.Column("sp", sa.String(64), nullable=True),
        sa.Column("jumped_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("x_user_id", name="pk_binding_jumps"),
    )
    op.create_index("ix_binding_jumps_expires_at", "binding_jumps", ["expires_at"])
    op.create_table(
        "binding_notices",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("x_user_id", sa.String(128), nullable=False),
        sa.Column("bind_action", sa.String(8), nullable=False),
        sa.Column("domain_id", sa.String(128), nullable=True),
        sa.Column("applied_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_binding_notices"),
    )
    op.create_index("ix_binding_notices_x_user_id", "binding_notices", ["x_user_id"])


def downgrade() -> None:
    op.drop_index("ix_binding_notices_x_user_id", table_name="binding_notices")
    op.drop_table("binding_notices")
    op.drop_index("ix_binding_jumps_expires_at", table_name="binding_jumps")
    op.drop_table("binding_jumps")
