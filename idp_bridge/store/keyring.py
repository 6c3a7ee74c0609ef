"""Key-ring state shared by every worker and node, and the evidence trail of metadata fetches.

State changes happen in one write transaction each (SQLite holds the write lock, PostgreSQL locks
the rows with ``FOR UPDATE``), and a partial unique index keeps at most one ``active`` row whatever
happens, so exactly one key signs once the first key is recorded. At most three keys are
published (next, active, retiring) - a fourth is refused in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import Connection

from idp_bridge.errors import KeyRingError
from idp_bridge.store.db import Database
from idp_bridge.store.tables import KeyPublicationRow, KeyStateRow, MetadataFetchRow
from idp_bridge.store.timeutil import require_aware

#: state -> the states a key may move to from it.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "next": ("active", "retired"),
    "active": ("retiring",),  # only by activating another key
    "retiring": ("active", "retired"),  # back to active = roll back a rotation
    "retired": (),
}


#: Metadata lists at most this many signing keys (next, active, retiring).
MAX_PUBLISHED = 3
_PUBLISHED = ("next", "active", "retiring")


@dataclass(frozen=True)
class MetadataFetch:
    at: datetime
    remote_addr: str | None
    user_agent: str | None
    etag: str | None
    key_ids: list[str]
    sp: str | None = None


@dataclass(frozen=True)
class KeyStateRecord:
    key_id: str
    state: str
    changed_at: datetime
    published_at: datetime | None


@dataclass(frozen=True)
class KeyPublication:
    key_id: str
    sp: str
    at: datetime
    note: str | None


# Arbitrary constant for pg_advisory_xact_lock: serialises key-ring changes across workers and nodes.
PG_KEYRING_LOCK_KEY = 0x1D_B41D_4B


def _locked_states(conn: Connection) -> dict[str, str]:
    """The states, read under a lock that excludes every other key-ring change until commit.

    SQLite: the write transaction already holds the database write lock (BEGIN IMMEDIATE).
    PostgreSQL: row locks cannot cover rows that do not exist yet (two workers bootstrapping an
    empty ring, two `keys new` racing the three-key cap), so take one advisory transaction lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_KEYRING_LOCK_KEY})
    query = select(KeyStateRow.key_id, KeyStateRow.state)
    return {r.key_id: r.state for r in conn.execute(query)}


class KeyRingRepository:
    """``store.keyring``: key states, publications and metadata fetches."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def states(self) -> dict[str, str]:
        with self._db.read() as conn:
            return {row.key_id: row.state for row in conn.execute(select(KeyStateRow.key_id, KeyStateRow.state))}

    def records(self) -> dict[str, KeyStateRecord]:
        with self._db.read() as conn:
            return {r.key_id: KeyStateRecord(r.key_id, r.state, r.changed_at, r.published_at)
                    for r in conn.execute(select(KeyStateRow))}

    def register(self, key_id: str, *, state: str, now: datetime) -> None:
        """Record a new key as ``next`` (published, not signing), or as ``active`` when it is the very first."""
        require_aware(now, "now")
        with self._db.write() as conn:
            states = _locked_states(conn)
            if key_id in states:
                raise KeyRingError(f"key {key_id} is already in the key ring (state {states[key_id]})", code="key_exists")
            if state == "active" and "active" in states.values():
                active = next(k for k, s in states.items() if s == "active")
                raise KeyRingError(f"key {active} is already active; add {key_id} as next and activate it",
                                code="key_active_exists")
            if state not in ("next", "active"):
                raise KeyRingError(f"a new key starts as next (or active when it is the first); got {state!r}",
                                code="key_state")
            published = sorted(k for k, s in states.items() if s in _PUBLISHED)
            if len(published) >= MAX_PUBLISHED:  # checked under the write lock: two concurrent adds cannot both pass
                raise KeyRingError(f"the metadata already lists {len(published)} signing keys ({', '.join(published)}); "
                                f"at most {MAX_PUBLISHED} (next, active, retiring): retire one first",
                                code="key_ring_full")
            conn.execute(insert(KeyStateRow).values(key_id=key_id, state=state, changed_at=now, published_at=now))

    def set_state(self, key_id: str, state: str, *, now: datetime) -> str | None:
        """Move ``key_id`` to ``state`` atomically. Activating demotes the active key to ``retiring``;
        returns the id of the key that was demoted (or None)."""
        require_aware(now, "now")
        with self._db.write() as conn:
            states = _locked_states(conn)
            current = states.get(key_id)
            if current is None:
                raise KeyRingError(f"key {key_id} has no recorded state; known: {', '.join(sorted(states)) or 'none'}",
                                code="key_unknown")
            if state not in TRANSITIONS.get(current, ()):
                hint = " (activate another key first: the active key is demoted to retiring)" if current == "active" else ""
                raise KeyRingError(f"key {key_id} is {current}; it cannot become {state}{hint}", code="key_transition")
            demoted = None
            if state == "active":
                for other, other_state in states.items():
                    if other_state == "active" and other != key_id:
                        conn.execute(update(KeyStateRow).where(KeyStateRow.key_id == other)
                                     .values(state="retiring", changed_at=now))
                        demoted = other
            conn.execute(update(KeyStateRow).where(KeyStateRow.key_id == key_id).values(state=state, changed_at=now))
            return demoted

    def confirm_published(self, key_id: str, sp: str, *, now: datetime, note: str | None = None) -> None:
        require_aware(now, "now")
        with self._db.write() as conn:
            conn.execute(insert(KeyPublicationRow).values(key_id=key_id, sp=sp, at=now, note=(note or "")[:512] or None))

    def publications(self, key_id: str) -> list[KeyPublication]:
        with self._db.read() as conn:
            rows = conn.execute(select(KeyPublicationRow).where(KeyPublicationRow.key_id == key_id)
                                .order_by(KeyPublicationRow.id))
            return [KeyPublication(r.key_id, r.sp, r.at, r.note) for r in rows]

    def record_metadata_fetch(self, *, remote_addr: str | None, user_agent: str | None, etag: str | None,
                              key_ids: list[str], now: datetime, sp: str | None = None) -> None:
        require_aware(now, "now")
        with self._db.write() as conn:
            conn.execute(insert(MetadataFetchRow).values(
                at=now, remote_addr=(remote_addr or "")[:64] or None, user_agent=(user_agent or "")[:512] or None,
                etag=(etag or "")[:128] or None, key_ids=list(key_ids), sp=(sp or "")[:64] or None))

    def metadata_fetches(self, *, limit: int = 100, since: datetime | None = None) -> list[MetadataFetch]:
        with self._db.read() as conn:
            query = select(MetadataFetchRow).order_by(MetadataFetchRow.id.desc()).limit(limit)
            if since is not None:
                query = query.where(MetadataFetchRow.at >= since)
            return [MetadataFetch(r.at, r.remote_addr, r.user_agent, r.etag, list(r.key_ids), r.sp)
                    for r in conn.execute(query)]

    def fetches_with_key(self, key_id: str, *, since: datetime | None = None,
                         limit: int = 10000) -> list[MetadataFetch]:
        """Fetches whose metadata listed ``key_id`` (newest first, bounded)."""
        return [f for f in self.metadata_fetches(limit=limit, since=since) if key_id in f.key_ids]
