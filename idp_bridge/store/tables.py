"""Declarative models: the one place the schema is described (migrations must match it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from idp_bridge.store.timeutil import UTCDateTime

# Stable constraint names so migrations and autogenerate agree on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Autoincrement ids: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class ReplayId(Base):
    """A one-time value (AuthnRequest ID, hand-off token jti) seen once until it expires."""

    __tablename__ = "replay_ids"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(1024))
    claimed_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class UserRow(Base):
    __tablename__ = "users"

    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(256))
    mobile: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class SessionRow(Base):
    """Server-side web session. ``id`` is the SHA-256 (hex) of the cookie token, never the token."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]]
    user_id: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("uq_audit_events_event_uid", "event_uid", unique=True),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(128), index=True)
    sp: Mapped[str | None] = mapped_column(String(1024))
    customer: Mapped[str | None] = mapped_column(String(256))
    detail: Mapped[dict[str, Any] | None]
    #: Unique per event (set by the audit writer), so an event spooled during an outage is stored once.
    event_uid: Mapped[str | None] = mapped_column(String(64))


class BindingRow(Base):
    """Partner customer (x_user_id) bound to a Huawei account (domain)."""

    __tablename__ = "bindings"

    x_user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    domain_id: Mapped[str | None] = mapped_column(String(128))
    domain_name: Mapped[str | None] = mapped_column(String(256))
    bind_action: Mapped[str | None] = mapped_column(String(32))
    payload: Mapped[dict[str, Any] | None]
    bound: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]
    #: Sequence number of the last webhook queued for this customer (1, 2, 3, ...).
    webhook_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class BindingJumpRow(Base):
    """A first-login console jump (``isFirstLogin=true``) the bridge sent: it allows one bind notice until it expires."""

    __tablename__ = "binding_jumps"

    x_user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sp: Mapped[str | None] = mapped_column(String(64))
    jumped_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class BindingNoticeRow(Base):
    """The SHA-256 of every Huawei binding notice applied: the same notice again is a replay and changes nothing."""

    __tablename__ = "binding_notices"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    x_user_id: Mapped[str] = mapped_column(String(128), index=True)
    bind_action: Mapped[str] = mapped_column(String(8))
    domain_id: Mapped[str | None] = mapped_column(String(128))
    applied_at: Mapped[datetime]


class OutboxRow(Base):
    """A message to deliver at least once (webhooks); ``dedupe_key`` makes enqueueing idempotent."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("dedupe_key"),
        Index("ix_outbox_pending", "delivered_at", "next_attempt_at"),
        Index("ix_outbox_customer", "customer", "delivered_at", "id"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Messages of one customer are delivered one after another, in id order (``seq`` says which change).
    customer: Mapped[str | None] = mapped_column(String(128))
    seq: Mapped[int | None] = mapped_column(Integer)


class MetadataFetchRow(Base):
    """Who fetched our IdP metadata, and which signing keys it showed them."""

    __tablename__ = "metadata_fetches"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    etag: Mapped[str | None] = mapped_column(String(128))
    key_ids: Mapped[list[str]]
    #: The configured SP the fetch was made for (``/saml/metadata?sp=NAME``); None when unattributed.
    sp: Mapped[str | None] = mapped_column(String(64))


class KeyStateRow(Base):
    """Lifecycle of one signing key in the key ring (e.g. next, active, retiring, retired)."""

    __tablename__ = "key_states"
    __table_args__ = (
        Index("uq_key_states_one_active", "state", unique=True, sqlite_where=text("state = 'active'"),
              postgresql_where=text("state = 'active'")),
    )

    key_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime]
    published_at: Mapped[datetime | None]


class KeyPublicationRow(Base):
    """An operator's statement that an SP holds metadata with this key (e.g. uploaded in Partner Center)."""

    __tablename__ = "key_publications"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(128), index=True)
    sp: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(String(512))




class DebugExchangeRow(Base):
    """A recent SAML exchange, decoded and redacted, for the debug console (kept to a bounded number)."""

    __tablename__ = "debug_exchanges"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(256))
    status: Mapped[int] = mapped_column(Integer)
    correlation_id: Mapped[str] = mapped_column(String(128))
    summary: Mapped[dict[str, Any]]
    attributes: Mapped[dict[str, Any]]
    decoded: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)



class LoginThrottleRow(Base):
    """Sign-in attempts counted per account or client address, shared by every worker and node."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime]
    locked_until: Mapped[datetime | None]
    expires_at: Mapped[datetime] = mapped_column(index=True)


metadata = Base.metadata
