"""``/healthz``: keys (with expiry warnings 30 days ahead), key reload errors, database."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint

from idp_bridge.idp.identity_provider import utcnow
from idp_bridge.web.auth import bridge

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    b = bridge()
    report: dict[str, Any] = {"status": "ok"}
    try:
        ring = b.keys.ring()
        now = utcnow()
        report["keys"] = [{"id": e.key_id, "state": e.state, "not_after": e.not_after.isoformat(),
                           "days_left": (e.not_after - now).days,
                           "expiring": (e.not_after - now) < dt.timedelta(days=b.config.keys.expiry_warning_days)}
                          for e in ring.entries]
        if any(k["expiring"] for k in report["keys"]):
            report["status"] = "warn"
        if b.keys.last_error:
            report["status"] = "warn"
            report["key_reload_error"] = b.keys.last_error
    except Exception as exc:
        report["status"] = "fail"
        report["keys"] = str(exc)
    try:
        report["database"] = "migrated" if b.store.is_migrated() else "not migrated"
        if report["database"] != "migrated":
            report["status"] = "fail"
    except Exception as exc:
        report["status"] = "fail"
        report["database"] = f"unreachable: {type(exc).__name__}"
    return report, 200 if report["status"] != "fail" else 503
