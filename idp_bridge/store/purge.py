"""Delete what has outlived its use: expired sessions, replay IDs, throttle windows and binding jumps, and
audit events, metadata fetches and delivered webhooks older than their retention (applied binding-notice
digests are kept: they make replays harmless)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete

from idp_bridge.store import throttle
from idp_bridge.store.db import Database
from idp_bridge.store.tables import (
    AuditEventRow,
    BindingJumpRow,
    MetadataFetchRow,
    OutboxRow,
    ReplayId,
    SessionRow,
)
from idp_bridge.store.timeutil import require_aware

DEFAULT_OUTBOX_RETENTION = timedelta(days=7)
DEFAULT_AUDIT_RETENTION = timedelta(days=180)
DEFAULT_METADATA_FETCH_RETENTION = timedelta(days=400)


def purge_expired(
    db: Database, now: datetime, *, outbox_retention: timedelta = DEFAULT_OUTBOX_RETENTION,
    audit_retention: timedelta = DEFAULT_AUDIT_RETENTION,
    metadata_fetch_retention: timedelta = DEFAULT_METADATA_FETCH_RETENTION,
) -> dict[str, int]:
    now = require_aware(now)
    with db.write() as conn:
        replay = conn.execute(delete(ReplayId).where(ReplayId.expires_at <= now)).rowcount
        sessions = conn.execute(delete(SessionRow).where(SessionRow.expires_at <= now)).rowcount
        outbox = conn.execute(
            delete(OutboxRow).where(
                OutboxRow.delivered_at.is_not(None), OutboxRow.delivered_at <= now - outbox_retention
            )
        ).rowcount
        login_throttle = throttle.purge(conn, now)
        jumps = conn.execute(delete(BindingJumpRow).where(BindingJumpRow.expires_at <= now)).rowcount
        audit = conn.execute(delete(AuditEventRow).where(AuditEventRow.at <= now - audit_retention)).rowcount
        fetches = conn.execute(
            delete(MetadataFetchRow).where(MetadataFetchRow.at <= now - metadata_fetch_retention)).rowcount
    return {"replay_ids": replay, "sessions": sessions, "outbox": outbox, "login_throttle": login_throttle,
            "binding_jumps": jumps, "audit_events": audit, "metadata_fetches": fetches}
