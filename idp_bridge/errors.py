"""The one exception tree of the bridge, and where every stable error code is listed.

``BridgeError`` is the base of everything outside the SAML core (configuration, keys, storage, the
platform's side); the SAML core keeps its own ``SamlError`` tree (``idp_bridge/saml/errors.py``) so that it
imports nothing outside itself. Both are ``CodedError``s (defined at the bottom, in the core): a stable
``code``, an ``operator`` message that says what was expected and what arrived, and an HTTP ``status``. Code
that turns any refusal into a page, an audit row or a CLI line catches ``ANY_ERROR`` (``AnyError``).

Every code is documented in docs/error-codes.md (tests/test_errors.py fails when one is missing), so an
operator can look up a code from a log line, an audit row or ``check`` output.

Rule: this module imports nothing of ours but the SAML core's error module.
"""

from __future__ import annotations

from typing import TypeAlias

from idp_bridge.saml.errors import (
    CodedError,
    MetadataError,
    ReplayError,
    RequestError,
    SamlError,
    SignatureError,
    SigningKeyError,
    StatusResponseError,
)

__all__ = [
    "ANY_ERROR", "AnyError", "BridgeError", "CodedError", "ConfigError", "KeyRingError", "MetadataError", "ReplayError",
    "RequestError", "SamlError", "SignatureError", "SigningKeyError", "StoreError", "StoreNotMigratedError",
    "StoreUnavailableError", "StatusResponseError", "UnknownUserError", "UserExistsError",
]


class BridgeError(CodedError):
    """Base class of the bridge's own errors. Subclasses set ``code`` and ``status``."""

    code = "bridge_error"


#: Any refusal, ours or the SAML core's: ``except ANY_ERROR as exc`` (``exc: AnyError``).
AnyError: TypeAlias = CodedError
ANY_ERROR: tuple[type[CodedError]] = (CodedError,)


class ConfigError(BridgeError):
    """The configuration (file, environment or a command's options) is invalid or incomplete."""

    code = "config_invalid"
    status = 500


class KeyRingError(BridgeError):
    """A signing key or certificate of ours cannot be loaded, written or used."""

    code = "key_invalid"
    status = 500


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
