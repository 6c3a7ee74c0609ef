"""``Store``: the one object the rest of the bridge holds to reach the database."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import URL, Engine

from idp_bridge.store import (
    audit,
    bind_guard,
    bindings,
    exchanges,
    keyring,
    migrate,
    outbox,
    purge,
    replay,
    sessions,
    users,
)
from idp_bridge.store.audit import AuditEvent
from idp_bridge.store.bindings import Binding
from idp_bridge.store.db import Database
from idp_bridge.store.engine import create_store_engine
from idp_bridge.store.outbox import OutboxMessage
from idp_bridge.store.sessions import SessionRecord
from idp_bridge.store.users import User


class Store:
    """Synchronous store over SQLite (embedded default) or PostgreSQL.

    Methods that depend on time take ``now`` (timezone-aware) so callers and tests own the clock.
    """

    def __init__(self, engine: Engine, *, password_hasher: PasswordHasher | None = None) -> None:
        self.engine = engine
        self._db = Database(engine)
        self._hasher = password_hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile

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

    # --- one-time values ----------------------------------------------------------------------
    def claim_once(self, kind: str, value: str, *, issuer: str, expires_at: datetime, now: datetime) -> bool:
        return replay.claim_once(self._db, kind, value, issuer=issuer, expires_at=expires_at, now=now)

    # --- users --------------------------------------------------------------------------------
    def add_user(
        self,
        user_id: str,
        password: str,
        *,
        email: str | None = None,
        name: str | None = None,
        mobile: str | None = None,
        now: datetime | None = None,
    ) -> User:
        return users.add_user(
            self._db, self._hasher, user_id, password, email=email, name=name, mobile=mobile, now=now
        )

    def set_password(self, user_id: str, password: str) -> None:
        users.set_password(self._db, self._hasher, user_id, password)

    def set_disabled(self, user_id: str, disabled: bool) -> None:
        users.set_disabled(self._db, user_id, disabled)

    def authenticate(self, user_id: str, password: str) -> User | None:
        return users.authenticate(self._db, self._hasher, user_id, password)

    def get_user(self, user_id: str) -> User | None:
        return users.get_user(self._db, user_id)

    # --- sessions -----------------------------------------------------------------------------
    def create_session(
        self, data: dict[str, Any], *, user_id: str | None, now: datetime, ttl: timedelta
    ) -> str:
        return sessions.create_session(self._db, data, user_id=user_id, now=now, ttl=ttl)

    def load_session(self, token: str, *, now: datetime) -> SessionRecord | None:
        return sessions.load_session(self._db, token, now=now)

    def save_session(
        self, token: str, data: dict[str, Any], *, user_id: str | None, now: datetime, ttl: timedelta
    ) -> bool:
        return sessions.save_session(self._db, token, data, user_id=user_id, now=now, ttl=ttl)

    def delete_session(self, token: str) -> bool:
        return sessions.delete_session(self._db, token)

    # --- audit --------------------------------------------------------------------------------
    def record_event(
        self,
        *,
        event: str,
        outcome: str,
        reason_code: str | None = None,
        correlation_id: str | None = None,
        sp: str | None = None,
        customer: str | None = None,
        detail: dict[str, Any] | None = None,
        now: datetime,
    ) -> None:
        audit.record_event(
            self._db,
            event=event,
            outcome=outcome,
            reason_code=reason_code,
            correlation_id=correlation_id,
            sp=sp,
            customer=customer,
            detail=detail,
            now=now,
        )

    def recent_events(self, limit: int = 50) -> list[AuditEvent]:
        return audit.recent_events(self._db, limit)

    # --- key ring ------------------------------------------------------------------------------
    def key_states(self) -> dict[str, str]:
        """key id -> state (next, active, retiring, retired) as every worker sees it."""
        return keyring.key_states(self._db)

    def key_records(self) -> dict[str, keyring.KeyStateRecord]:
        return keyring.key_records(self._db)

    def register_key(self, key_id: str, *, state: str = "next", now: datetime) -> None:
        keyring.register_key(self._db, key_id, state=state, now=now)

    def set_key_state(self, key_id: str, state: str, *, now: datetime) -> str | None:
        """Atomic transition; activating demotes the active key to retiring (its id is returned)."""
        return keyring.set_key_state(self._db, key_id, state, now=now)

    def confirm_published(self, key_id: str, sp: str, *, now: datetime, note: str | None = None) -> None:
        keyring.confirm_published(self._db, key_id, sp, now=now, note=note)

    def key_publications(self, key_id: str) -> list[keyring.KeyPublication]:
        return keyring.publications(self._db, key_id)

    def record_metadata_fetch(
        self, *, remote_addr: str | None, user_agent: str | None, etag: str | None, key_ids: list[str],
        now: datetime, sp: str | None = None,
    ) -> None:
        keyring.record_metadata_fetch(
            self._db, remote_addr=remote_addr, user_agent=user_agent, etag=etag, key_ids=key_ids, now=now, sp=sp
        )

    def metadata_fetches(self, *, limit: int = 100, since: datetime | None = None) -> list[keyring.MetadataFetch]:
        return keyring.metadata_fetches(self._db, limit=limit, since=since)

    def fetches_with_key(self, key_id: str, *, since: datetime | None = None) -> list[keyring.MetadataFetch]:
        return keyring.fetches_with_key(self._db, key_id, since=since)

    # --- debug console -------------------------------------------------------------------------
    def record_exchange(self, *, at: datetime, kind: str, path: str, status: int, correlation_id: str,
                        summary: dict[str, Any], attributes: dict[str, Any], decoded: str, error: str,
                        keep: int) -> None:
        exchanges.record_exchange(self._db, at=at, kind=kind, path=path, status=status,
                                  correlation_id=correlation_id, summary=summary, attributes=attributes,
                                  decoded=decoded, error=error, keep=keep)

    def recent_exchanges(self, *, limit: int) -> list[dict[str, Any]]:
        return exchanges.recent_exchanges(self._db, limit=limit)

    # --- housekeeping -------------------------------------------------------------------------
    def purge_expired(
        self, now: datetime, *, outbox_retention: timedelta = purge.DEFAULT_OUTBOX_RETENTION
    ) -> dict[str, int]:
        return purge.purge_expired(self._db, now, outbox_retention=outbox_retention)

    # --- bindings -----------------------------------------------------------------------------
    def apply_binding(
        self, *, x_user_id: str, bound: bool, domain_id: str | None = None, domain_name: str | None = None,
        bind_action: str | None = None, payload: dict[str, Any] | None = None, source: str, now: datetime,
        notify: bool = True,
    ) -> tuple[bool, str | None]:
        """Idempotent; (changed, webhook idempotency key). A change queues a webhook in the same transaction."""
        return bindings.apply_binding(
            self._db, x_user_id=x_user_id, bound=bound, domain_id=domain_id, domain_name=domain_name,
            bind_action=bind_action, payload=payload, source=source, now=now, notify=notify,
        )

    def get_binding(self, x_user_id: str) -> Binding | None:
        return bindings.get_binding(self._db, x_user_id)

    def list_bindings(self, *, limit: int = 1000, only_bound: bool = False) -> list[Binding]:
        return bindings.list_bindings(self._db, limit=limit, only_bound=only_bound)

    # --- binding-notice replay guard (bind_guard.py) ---------------------------------------
    def record_binding_jump(self, x_user_id: str, *, sp: str | None, now: datetime, expires_at: datetime) -> None:
        bind_guard.record_jump(self._db, x_user_id, sp=sp, now=now, expires_at=expires_at)

    def pending_binding_jump(self, x_user_id: str, *, now: datetime) -> datetime | None:
        return bind_guard.pending_jump(self._db, x_user_id, now=now)

    def apply_bind_notice(
        self, *, digest: str, x_user_id: str, bound: bool, domain_id: str | None, domain_name: str | None,
        bind_action: str, payload: dict[str, Any] | None, source: str, now: datetime, notify: bool = True,
    ) -> bind_guard.NoticeResult:
        """A verified Huawei notice: applied once, a bind only after a first-login jump, an unbind only if current."""
        return bind_guard.apply_notice(
            self._db, digest=digest, x_user_id=x_user_id, bound=bound, domain_id=domain_id, domain_name=domain_name,
            bind_action=bind_action, payload=payload, source=source, now=now, notify=notify,
        )

    # --- outbox -------------------------------------------------------------------------------
    def claim_outbox(self, *, now: datetime, lease: timedelta, limit: int = 20) -> list[OutboxMessage]:
        return outbox.claim_due(self._db, now=now, lease=lease, limit=limit)

    def mark_outbox_delivered(self, message_id: int, *, now: datetime) -> bool:
        return outbox.mark_delivered(self._db, message_id, now=now)

    def mark_outbox_failed(self, message_id: int, *, error: str, retry_at: datetime) -> None:
        outbox.mark_failed(self._db, message_id, error=error, retry_at=retry_at)

    def outbox_messages(self, *, pending_only: bool = False, limit: int = 100) -> list[OutboxMessage]:
        return outbox.list_messages(self._db, pending_only=pending_only, limit=limit)

    def outbox_pending_count(self) -> int:
        return outbox.pending_count(self._db)
