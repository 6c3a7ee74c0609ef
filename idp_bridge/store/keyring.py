"""Key-ring state shared by every worker and node, and the evidence trail of metadata fetches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select

from idp_bridge.store.db import Database
from idp_bridge.store.tables import KeyStateRow, MetadataFetchRow
from idp_bridge.store.timeutil import require_aware


@dataclass(frozen=True)
class MetadataFetch:
    at: datetime
    remote_addr: str | None
    user_agent: str | None
    etag: str | None
    key_ids: list[str]


def key_states(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return {row.key_id: row.state for row in conn.execute(select(KeyStateRow.key_id, KeyStateRow.state))}


def record_metadata_fetch(db: Database, *, remote_addr: str | None, user_agent: str | None, etag: str | None,
                          key_ids: list[str], now: datetime) -> None:
    require_aware(now, "now")
    with db.write() as conn:
        conn.execute(insert(MetadataFetchRow).values(
            at=now, remote_addr=(remote_addr or "")[:64] or None, user_agent=(user_agent or "")[:512] or None,
            etag=(etag or "")[:128] or None, key_ids=list(key_ids)))


def metadata_fetches(db: Database, *, limit: int = 100) -> list[MetadataFetch]:
    with db.read() as conn:
        rows = conn.execute(select(MetadataFetchRow).order_by(MetadataFetchRow.id.desc()).limit(limit))
        return [MetadataFetch(r.at, r.remote_addr, r.user_agent, r.etag, list(r.key_ids)) for r in rows]
