"""Audit events: one structured record per login, rejection, binding, webhook delivery, return, key change.

Each event is stored in the database and written as one JSON log line on the ``idp_bridge.ops.audit``
logger. Callers pass only what is safe to keep: never a password, token or raw SAML message.

While the database is away an event is written to the local spool (ops/spool.py) instead, with the
unique id it would have had, and stored from there once the database is back: none is lost, none
is stored twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from idp_bridge.ops.metrics import count_event
from idp_bridge.ops.spool import AuditSpool
from idp_bridge.store import Store, StoreUnavailableError
from idp_bridge.store.audit import scrub_detail

log = logging.getLogger("idp_bridge.audit")

_spool: AuditSpool | None = None


def configure_spool(directory: Path | None) -> AuditSpool | None:
    """Where this process spools events during a database outage (None: nowhere, they are only logged)."""
    global _spool
    _spool = AuditSpool(directory) if directory is not None else None
    return _spool


def current_spool() -> AuditSpool | None:
    return _spool


def audit(store: Store | None, event: str, outcome: str, *, reason_code: str | None = None,
          correlation_id: str | None = None, sp: str | None = None, customer: str | None = None,
          detail: dict[str, Any] | None = None, now: dt.datetime | None = None) -> None:
    now = now or dt.datetime.now(dt.UTC)
    detail = scrub_detail(detail) if detail else None
    line: dict[str, Any] = {"time": now.isoformat(), "event": event, "outcome": outcome, "reason": reason_code,
            "correlation_id": correlation_id, "sp": sp, "customer": customer}
    if detail:
        line["detail"] = detail
    log.info(json.dumps(line, ensure_ascii=False, default=str))
    count_event(event, outcome, reason_code, sp)
    if store is None:
        return
    record: dict[str, Any] = {"event": event, "outcome": outcome, "reason_code": reason_code,
                              "correlation_id": correlation_id, "sp": sp, "customer": customer, "detail": detail,
                              "event_uid": uuid.uuid4().hex}
    try:
        store.audit.record(**record, now=now)
    except StoreUnavailableError as exc:
        _spool_event({**record, "at": now.isoformat()}, exc)
    except Exception:  # an audit write must never turn a refusal into a 500
        log.exception("could not store audit event %s/%s", event, outcome)


def _spool_event(record: dict[str, Any], exc: StoreUnavailableError) -> None:
    spool = _spool
    if spool is None:
        log.error(json.dumps({"event": "audit_not_stored", "event_uid": record["event_uid"], "error": str(exc)}))
        return
    try:
        spool.append(record)
    except (OSError, ValueError) as spool_exc:  # the log line above is all that is left of it
        log.error(json.dumps({"event": "audit_not_stored", "event_uid": record["event_uid"],
                              "error": str(exc), "spool_error": str(spool_exc)}))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; messages that already are JSON objects are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        base: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name}
        if msg.startswith("{"):
            try:
                base.update(json.loads(msg))
            except ValueError:
                base["message"] = msg
        else:
            base["message"] = msg
        if record.exc_info:
            base["exception"] = self.formatException(record.exc_info)
        return json.dumps(base, ensure_ascii=False, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("idp_bridge")
    if any(getattr(h, "_idp_bridge", False) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler._idp_bridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
