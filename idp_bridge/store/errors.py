"""Typed errors the storage layer raises (they share the bridge's error tree)."""

from __future__ import annotations

from idp_bridge.saml.errors import BridgeError


class StoreError(BridgeError):
    """Base class for storage failures."""

    code = "store_error"
    status = 500


class StoreUnavailableError(StoreError):
    """The database cannot be reached, or stayed locked longer than the busy timeout."""

    code = "store_unavailable"
    status = 503


class StoreNotMigratedError(StoreError):
    """The database schema is not at the revision this code expects."""

    code = "store_not_migrated"
    status = 500


class UserExistsError(StoreError):
    code = "user_exists"
    status = 409


class UnknownUserError(StoreError):
    code = "user_unknown"
    status = 404
