"""Storage layer: SQLite (embedded default) or PostgreSQL, chosen by a SQLAlchemy URL."""

from idp_bridge.errors import (
    StoreError,
    StoreNotMigratedError,
    StoreUnavailableError,
    UnknownUserError,
    UserExistsError,
)
from idp_bridge.store.audit import AuditEvent
from idp_bridge.store.sessions import SessionRecord
from idp_bridge.store.store import Store
from idp_bridge.store.users import User

__all__ = [
    "AuditEvent",
    "SessionRecord",
    "Store",
    "StoreError",
    "StoreNotMigratedError",
    "StoreUnavailableError",
    "UnknownUserError",
    "User",
    "UserExistsError",
]
