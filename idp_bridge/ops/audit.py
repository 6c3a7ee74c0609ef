"""Audit events: one structured record per login, rejection, binding, webhook delivery, return, key change.

Each event is written as one JSON log line on the ``idp_bridge.audit`` logger, always, and stored in
the database. Callers pass only what is safe to keep: never a password, token or raw SAML message.

While the database is away an event is written to the local spool (ops/spool.py) instead, with the
unique id it would have had, and stored from there once the database is back: none is lost, none
is stored twice.

Refusals are what anonymous traffic can cause at will, so the database takes at most
``REFUSALS_PER_MINUTE`` of them per (event, reason) and minute in each process; the rest are only
logged, and once the minute is over one summary row says how many were left out (``detail.suppressed``),
written with the next refusal of that kind. Successful events (a login, a binding, a key change)
are always stored.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

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


REFUSALS_PER_MINUTE = 60


class RefusalBudget:
    """Per (event, reason): how many refusals were stored this minute and how many were left out."""

    def __init__(self, per_minute: int = REFUSALS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str | None], tuple[dt.datetime, int, int]] = {}

    def admit(self, event: str, reason: str | None, now: dt.datetime) -> tuple[bool, int, dt.datetime | None]:
        """(store this one?, refusals left out in the previous minute of this kind, that minute)."""
        minute = now.replace(second=0, microsecond=0)
        with self._lock:
            start, stored, left_out = self._windows.get((event, reason), (minute, 0, 0))
            carried, carried_from = 0, None
            if start != minute:
                carried, carried_from = left_out, start
                stored, left_out = 0, 0
            if len(self._windows) > 10_000:  # reasons are stable codes; this only guards memory
                self._windows.clear()
            ok = stored < self.per_minute
            self._windows[(event, reason)] = (minute, stored + ok, left_out + (not ok))
            return ok, carried, carried_from


_budgets: weakref.WeakKeyDictionary[Store, RefusalBudget] = weakref.WeakKeyDictionary()


def refusal_budget(store: Store) -> RefusalBudget:
    budget = _budgets.get(store)
    if budget is None:
        budget = _budgets[store] = RefusalBudget()
    return budget


def audit(store: Store | None, event: str, outcome: str, *, reason_code: str | None = None,
          correlation_id: str | None = None, sp: str | None = None, customer: str | None = None,
          detail: dict[str, Any] | None = None, now: dt.datetime | None = None) -> None:
    now = now or dt.datetime.now(dt.UTC)
    detail = scrub_detail(detail) if detail else None
    line: dict[str, Any] = {"time": now.isoformat(), "event": event, "outcome": outcome, "reason": reason_code,
            "correlation_id": correlation_id, "sp": sp, "customer": customer}
    if detail:
        line["detail"] = detail
    log.info(JsonLine(line))
    count_event(event, outcome, reason_code, sp)
    if store is None:
        return
    try:
        if outcome != "ok":
            stored, carried, since = refusal_budget(store).admit(event, reason_code, now)
            if carried:
                _store(store, {"event": event, "outcome": outcome, "reason_code": reason_code,
                               "detail": {"suppressed": carried, "minute": since.isoformat() if since else None,
                                          "note": "refusals of this kind beyond the per-minute budget; "
                                                  "each one is in the log"}}, now)
            if not stored:
                return
        _store(store, {"event": event, "outcome": outcome, "reason_code": reason_code,
                       "correlation_id": correlation_id, "sp": sp, "customer": customer, "detail": detail}, now)
    except Exception:  # an audit write must never turn a refusal into a 500
        log.exception("could not store audit event %s/%s", event, outcome)


def _store(store: Store, record: dict[str, Any], now: dt.datetime) -> None:
    """Into the database, or (database away) into the spool, under an id that makes it count once."""
    record = {**record, "event_uid": uuid.uuid4().hex}
    try:
        store.audit.record(**record, now=now)
    except (StoreUnavailableError, DBAPIError, sqlite3.Error) as exc:
        _spool_event({**record, "at": now.isoformat()}, exc)


def _spool_event(record: dict[str, Any], exc: BaseException) -> None:
    spool = _spool
    if spool is None:
        log.error(json.dumps({"event": "audit_not_stored", "event_uid": record["event_uid"], "error": str(exc)}))
        return
    try:
        spool.append(record)
    except (OSError, ValueError) as spool_exc:  # the log line above is all that is left of it
        log.error(json.dumps({"event": "audit_not_stored", "event_uid": record["event_uid"],
                              "error": str(exc), "spool_error": str(spool_exc)}))


class JsonLine:
    """A log message that is a JSON object: ``JsonFormatter`` merges its fields without a round trip through
    text; any other formatter (a test's caplog, a plain handler) gets the JSON text, made once when asked."""

    __slots__ = ("fields", "_text")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = json.dumps(self.fields, ensure_ascii=False, default=str)
        return self._text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; messages that already are JSON objects are merged in."""

    def format(self, record: logging.LogRecord) -> str:
        base: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name}
        if isinstance(record.msg, JsonLine) and not record.args:
            base.update(record.msg.fields)
            if record.exc_info:
                base["exception"] = self.formatException(record.exc_info)
            return json.dumps(base, ensure_ascii=False, default=str)
        msg = record.getMessage()
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
