"""Expired rows go away on their own: a small daemon thread in every web process purges them; another
stores the audit events spooled during a database outage once the database is back.

Purging is idempotent and cheap (indexed deletes), so several workers and nodes running it is
harmless; `idp-bridge db purge` does the same once, for cron or a quiet deployment.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

from idp_bridge.config import Config, RetentionSettings
from idp_bridge.ops.audit import configure_spool
from idp_bridge.ops.periodic import Periodic
from idp_bridge.ops.spool import replay_job
from idp_bridge.store import Store

log = logging.getLogger("idp_bridge.housekeeping")

DEFAULT_INTERVAL_SECONDS = 600.0
SPOOL_INTERVAL_SECONDS = 2.0


def purge_once(store: Store, *, now: dt.datetime | None = None,
               retention: RetentionSettings | None = None) -> dict[str, int]:
    r = retention or RetentionSettings()
    counts = store.purge_expired(now or dt.datetime.now(dt.UTC), outbox_retention=dt.timedelta(days=r.outbox_days),
                                 audit_retention=dt.timedelta(days=r.audit_days),
                                 metadata_fetch_retention=dt.timedelta(days=r.metadata_fetch_days))
    if any(counts.values()):
        log.info(json.dumps({"event": "purge", "deleted": counts}))
    return counts


def purge_loop(store: Store, *, interval: float = DEFAULT_INTERVAL_SECONDS,
               retention: RetentionSettings | None = None) -> Periodic:
    """``purge_once`` every ``interval`` seconds (first after one interval: start-up stays quick)."""
    def job() -> bool:
        purge_once(store, retention=retention)
        return False

    return Periodic("idp-bridge-purge", job, interval=interval, wait_first=True)


def spool_dir(config: Config) -> Path:
    """``$IDP_BRIDGE_SPOOL_DIR``, else ``spool/`` beside the config file (keep it off the database's disk)."""
    explicit = os.environ.get("IDP_BRIDGE_SPOOL_DIR")
    if explicit:
        return Path(explicit)
    return (config.path.parent if config.path is not None else Path.cwd()) / "spool"


def spool_loop(store: Store, directory: Path, *, interval: float = SPOOL_INTERVAL_SECONDS) -> Periodic:
    """Audit events spooled during a database outage are stored within ``interval`` seconds of its end."""
    spool = configure_spool(directory)
    assert spool is not None
    return Periodic("idp-bridge-audit-spool", lambda: replay_job(spool, store), interval=interval)
