"""A ``IdentityProvider`` for diagnostics on this host: the configured keys and SPs, the database when it answers."""

from __future__ import annotations

import logging

from idp_bridge.config import Config
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.keys.provider import KeyRingProvider

log = logging.getLogger("idp_bridge.diagnostics")


def local_bridge(config: Config) -> IdentityProvider:
    """Never migrates or writes; key states come from the database when it is reachable and migrated."""
    from idp_bridge.store import Store

    try:
        store = Store.from_url(config.database_url)
        if store.is_migrated():
            return IdentityProvider(config, store)
        store.dispose()
    except Exception as exc:  # noqa: BLE001 - diagnostics go on without the database
        log.info("diagnostics without the database: %s", exc)
    return IdentityProvider(config, None, keys=KeyRingProvider(config))  # type: ignore[arg-type]  # read-only use
