"""``Store``: the one object the rest of the bridge holds to reach the database.

Rule: the store only opens the database and hands out its repositories as attributes
(``store.replay.claim(...)``, ``store.sessions.load(...)``, ...); it never re-declares their
methods, so an argument is written once, in the repository.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import URL, Engine

from idp_bridge.store import migrate, purge
from idp_bridge.store.audit import AuditRepository
from idp_bridge.store.bind_guard import BindGuardRepository
from idp_bridge.store.bindings import BindingRepository
from idp_bridge.store.db import Database
from idp_bridge.store.engine import create_store_engine
from idp_bridge.store.exchanges import ExchangeRepository
from idp_bridge.store.keyring import KeyRingRepository
from idp_bridge.store.outbox import OutboxRepository
from idp_bridge.store.replay import ReplayRepository
from idp_bridge.store.sessions import SessionRepository
from idp_bridge.store.throttle import ThrottleRepository
from idp_bridge.store.users import UserRepository


class Store:
    """Synchronous store over SQLite (embedded default) or PostgreSQL.

    Methods that depend on time take ``now`` (timezone-aware) so callers and tests own the clock.
    """

    def __init__(self, engine: Engine, *, password_hasher: PasswordHasher | None = None) -> None:
        self.engine = engine
        self._db = Database(engine)
        hasher = password_hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self.replay = ReplayRepository(self._db)
        self.users = UserRepository(self._db, hasher)
        self.sessions = SessionRepository(self._db)
        self.throttle = ThrottleRepository(self._db)
        self.audit = AuditRepository(self._db)
        self.keyring = KeyRingRepository(self._db)
        self.exchanges = ExchangeRepository(self._db)
        self.bindings = BindingRepository(self._db)
        self.bind_guard = BindGuardRepository(self._db)
        self.outbox = OutboxRepository(self._db)

    @classmethod
    def from_url(
        cls, url: str | URL, *, password_hasher: PasswordHasher | None = None, **engine_kwargs: Any
    ) -> Store:
        """Open the database at ``url`` and check it answers (StoreUnavailableError if not)."""
        store = cls(create_store_engine(url, **engine_kwargs), password_hasher=password_hasher)
        try:
            store._db.ping()
        except BaseException:
            store.dispose()
            raise
        return store

    @property
    def dialect(self) -> str:
        return self._db.dialect

    def describe(self) -> str:
        """The database URL with any password hidden."""
        return self._db.describe()

    # --- schema -----------------------------------------------------------------------------
    def upgrade(self, revision: str = "head") -> None:
        migrate.upgrade(self._db, revision)

    def current_revision(self) -> str | None:
        return migrate.current_revision(self._db)

    def is_migrated(self) -> bool:
        return self.current_revision() == migrate.head_revision()

    def dispose(self) -> None:
        self.engine.dispose()

    def transaction(self) -> AbstractContextManager[None]:
        """One write transaction for the per-request calls in the block: ``with store.transaction(): ...``
        (all of it commits together or, on an exception, none of it). Only ``replay.claim``, ``audit.record``
        and ``sessions.*`` may run in it (store/driver.py); any other repository call raises RuntimeError."""
        return self._db.transaction()

    # --- housekeeping (spans several repositories) ---------------------------------------------
    def purge_expired(
        self, now: datetime, *, outbox_retention: timedelta = purge.DEFAULT_OUTBOX_RETENTION,
        audit_retention: timedelta = purge.DEFAULT_AUDIT_RETENTION,
        metadata_fetch_retention: timedelta = purge.DEFAULT_METADATA_FETCH_RETENTION,
    ) -> dict[str, int]:
        return purge.purge_expired(self._db, now, outbox_retention=outbox_retention, audit_retention=audit_retention,
                                   metadata_fetch_retention=metadata_fetch_retention)
