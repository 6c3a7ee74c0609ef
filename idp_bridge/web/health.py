"""``/healthz``: keys (with expiry warnings 30 days ahead), key file problems, database.

``fail`` (HTTP 503) when nothing can sign, or when the active key is not served from its own file (it
broke: workers sign with the copy loaded before or its last verified copy, and a restart would need
that copy); ``warn`` for a refused next/retiring key or a certificate close to expiry. Reads what
the key ring holds: never loads or parses a key.

Cheap enough to poll hard: the database verdict (reachable, schema at head) is read at most once per
``DATABASE_CHECK_SECONDS`` in each worker (alembic's version check costs more than the rest of the
request), so an outage shows within a second.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from flask import Blueprint, current_app

from idp_bridge.idp.identity_provider import utcnow
from idp_bridge.web.auth import bridge

bp = Blueprint("health", __name__)

DATABASE_CHECK_SECONDS = 1.0


def database_state() -> str:
    """"migrated", "not migrated" or "unreachable: <error type>", at most ``DATABASE_CHECK_SECONDS`` old."""
    cache: dict[str, tuple[float, str]] = current_app.extensions.setdefault("idp_bridge_health", {})
    now = time.monotonic()
    held = cache.get("database")
    if held is not None and now - held[0] < DATABASE_CHECK_SECONDS:
        return held[1]
    try:
        state = "migrated" if bridge().store.is_migrated() else "not migrated"
    except Exception as exc:
        state = f"unreachable: {type(exc).__name__}"
    cache["database"] = (now, state)
    return state


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    b = bridge()
    report: dict[str, Any] = {"status": "ok"}
    health = b.keys.health()
    if health.ring is None:
        report["status"] = "fail"
        report["keys"] = health.error
        report["key_file_error"] = health.error
    else:
        now = utcnow()
        report["keys"] = [{"id": e.key_id, "state": e.state, "not_after": e.not_after.isoformat(),
                           "days_left": (e.not_after - now).days, "source": e.source,
                           "expiring": (e.not_after - now) < dt.timedelta(days=b.config.keys.expiry_warning_days)}
                          for e in health.ring.entries]
        if any(k["expiring"] for k in report["keys"]):
            report["status"] = "warn"
        if health.problems:
            report["status"] = "warn"
            report["key_reload_error"] = health.error
    if health.active_problems:
        report["status"] = "fail"
        report["key_file_error"] = "; ".join(f"{p.path}: {p.message} [{p.code}]" for p in health.active_problems)
    report["database"] = database_state()
    if report["database"] != "migrated":
        report["status"] = "fail"
    return report, 200 if report["status"] != "fail" else 503
