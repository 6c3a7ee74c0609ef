"""The debug console's recent exchanges: one shared, bounded ring in the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select

from idp_bridge.store.db import Database
from idp_bridge.store.tables import DebugExchangeRow
from idp_bridge.store.timeutil import require_aware


class ExchangeRepository:
    """``store.exchanges``: the debug console's recent exchanges."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(self, *, at: datetime, kind: str, path: str, status: int, correlation_id: str,
                        summary: dict[str, Any], attributes: dict[str, Any], decoded: str, error: str,
                        keep: int) -> None:
        """Add one exchange and drop all but the newest ``keep`` in the same transaction."""
        require_aware(at, "at")
        with self._db.write() as conn:
            new_id = conn.execute(insert(DebugExchangeRow).values(
                at=at, kind=kind[:32], path=path[:256], status=status, correlation_id=correlation_id[:128],
                summary=summary, attributes=attributes, decoded=decoded, error=error,
            ).returning(DebugExchangeRow.id)).scalar_one()
            conn.execute(delete(DebugExchangeRow).where(DebugExchangeRow.id <= new_id - keep))

    def recent(self, *, limit: int) -> list[dict[str, Any]]:
        """Newest first, as plain dicts (the caller owns the domain type)."""
        with self._db.read() as conn:
            rows = conn.execute(select(DebugExchangeRow).order_by(DebugExchangeRow.id.desc()).limit(limit))
            return [{"at": r.at, "kind": r.kind, "path": r.path, "status": r.status, "correlation_id": r.correlation_id,
                     "summary": dict(r.summary), "attributes": dict(r.attributes), "decoded": r.decoded,
                     "error": r.error} for r in rows]
