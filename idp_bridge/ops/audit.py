"""Audit events: one structured record per login, rejection, binding, webhook delivery, return, key change.

Each event is written as one JSON log line on the ``idp_bridge.audit`` logger, always, and stored in
the database. Callers pass only what is safe to keep: never a password, token or raw SAML message.

While the database is away an event is written to the local spool (ops/spool.py) instead, with the
unique id it would have had, and stored from there once the database is back: none is lost, none
is stored twice.

``audit`` is ``audit_prepared(prepare_audit(...))``. A caller that holds a write transaction (an SSO: replay
claim, audit row, session) prepares the event before it, so that inside it only the log line is written
and the row inserted: the detail scrubbed once, its JSON made once for both, the row stamped and bounded.

Refusals are what anonymous traffic can cause at will, so the database takes at most
``REFUSALS_PER_MINUTE`` of them per (event, reason) and minute in each process; the rest are only
logged, and once the minute is over one summary row says how many were left out (``detail.suppressed``),
written with the next refusal of that kind. Successful events (a login, a binding, a key change)
are always stored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy.exc import DBAPIError

from idp_bridge.ops.metrics import count_event
from idp_bridge.ops.spool import AuditSpool
from idp_bridge.store import Store, StoreUnavailableError
from idp_bridge.store.audit import PreparedRow, scrub_detail

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
    audit_prepared(prepare_audit(store, event, outcome, reason_code=reason_code, correlation_id=correlation_id,
                                 sp=sp, customer=customer, detail=detail, now=now))


class PreparedAudit(NamedTuple):
    """An event made ready by ``prepare_audit``: its detail scrubbed, its log line made and (an ``ok`` event,
    which is always stored) its database row built, so that ``audit_prepared`` has little left to do."""

    store: Store | None
    now: dt.datetime
    event: str
    outcome: str
    reason_code: str | None
    correlation_id: str | None
    sp: str | None
    customer: str | None
    detail: dict[str, Any] | None  # scrubbed
    line: JsonLine
    row: PreparedRow | Exception | None  # None: built when stored; an exception: why it cannot be


def prepare_audit(store: Store | None, event: str, outcome: str, *, reason_code: str | None = None,
                  correlation_id: str | None = None, sp: str | None = None, customer: str | None = None,
                  detail: dict[str, Any] | None = None, now: dt.datetime | None = None) -> PreparedAudit:
    """What ``audit`` does before it logs or stores anything, for a caller to do before its write transaction;
    ``audit_prepared`` then logs and stores the event (once per event: an ``ok`` event's id is fixed here)."""
    now = now or dt.datetime.now(dt.UTC)
    detail = scrub_detail(detail) if detail else None
    row: PreparedRow | Exception | None = None
    if store is not None and outcome == "ok":  # a refusal may be left out (budget): its row waits
        try:
            row = _prepare_row(store, event, outcome, reason_code, correlation_id, sp, customer, detail, now)
        except Exception as exc:  # raised where it is stored (and logged there, after the line)
            row = exc
    fields: dict[str, Any] = {"time": now.isoformat(), "event": event, "outcome": outcome, "reason": reason_code,
                              "correlation_id": correlation_id, "sp": sp, "customer": customer}
    if detail:
        fields["detail"] = detail
    line = JsonLine(fields)
    if log.isEnabledFor(logging.INFO):
        line.render()  # its text made now, before the caller's transaction
    return PreparedAudit(store, now, event, outcome, reason_code, correlation_id, sp, customer, detail, line, row)


def audit_prepared(prepared: PreparedAudit) -> None:
    """Log and store an event from ``prepare_audit`` (inside the caller's transaction, if it has one)."""
    p = prepared
    log.info(p.line)
    count_event(p.event, p.outcome, p.reason_code, p.sp)
    store = p.store
    if store is None:
        return
    try:
        if p.outcome != "ok":
            stored, carried, since = refusal_budget(store).admit(p.event, p.reason_code, p.now)
            if carried:
                _store(store, {"event": p.event, "outcome": p.outcome, "reason_code": p.reason_code,
                               "detail": {"suppressed": carried, "minute": since.isoformat() if since else None,
                                          "note": "refusals of this kind beyond the per-minute budget; "
                                                  "each one is in the log"}}, p.now)
            if not stored:
                return
        _store_prepared(store, p)
    except Exception:  # an audit write must never turn a refusal into a 500
        log.exception("could not store audit event %s/%s", p.event, p.outcome)


def _prepare_row(store: Store, event: str, outcome: str, reason_code: str | None, correlation_id: str | None,
                 sp: str | None, customer: str | None, detail: dict[str, Any] | None,
                 now: dt.datetime) -> PreparedRow:
    return store.audit.prepare(event=event, outcome=outcome, reason_code=reason_code, correlation_id=correlation_id,
                               sp=sp, customer=customer, detail=detail, scrubbed=True, now=now,
                               event_uid=_event_uid())


def _event_uid() -> str:
    """``uuid.uuid4().hex`` (random, version and variant bits set alike) without making a UUID object."""
    n = int.from_bytes(os.urandom(16), "big")
    n = n & ~(0xC000 << 48) | 0x8000 << 48  # variant: RFC 4122
    n = n & ~(0xF000 << 64) | 4 << 76  # version 4
    return f"{n:032x}"


def _store_prepared(store: Store, p: PreparedAudit) -> None:
    """``_store`` for a prepared event (its row made now if it was not yet)."""
    row = p.row
    if row is None:
        row = _prepare_row(store, p.event, p.outcome, p.reason_code, p.correlation_id, p.sp, p.customer, p.detail,
                           p.now)
    elif isinstance(row, Exception):
        raise row
    _insert_or_spool(store, row, {"event": p.event, "outcome": p.outcome, "reason_code": p.reason_code,
                                  "correlation_id": p.correlation_id, "sp": p.sp, "customer": p.customer,
                                  "detail": p.detail}, p.now)


def _store(store: Store, record: dict[str, Any], now: dt.datetime) -> None:
    """Into the database, or (database away) into the spool, under an id that makes it count once."""
    _insert_or_spool(store, store.audit.prepare(**record, now=now, event_uid=_event_uid()), record, now)


def _insert_or_spool(store: Store, row: PreparedRow, record: dict[str, Any], now: dt.datetime) -> None:
    try:
        store.audit.record_prepared(row)
    except (StoreUnavailableError, DBAPIError, sqlite3.Error) as exc:
        _spool_event({**record, "event_uid": row.event_uid, "at": now.isoformat()}, exc)


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

    def render(self) -> None:
        """Make the text now rather than in the handler; a field that cannot be written fails there, as before."""
        with contextlib.suppress(Exception):  # logging reports it when the line is written
            str(self)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; messages that already are JSON objects are merged in."""

    def __init__(self) -> None:
        super().__init__()
        self._heads: dict[tuple[str, str], str] = {}

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        if (isinstance(msg, JsonLine) and msg.fields and not record.args and not record.exc_info
                and "level" not in msg.fields and "logger" not in msg.fields):
            return self._head(record) + str(msg)[1:]  # the same text as the merged dict's, without the dict
        base: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name}
        if isinstance(msg, JsonLine) and not record.args:
            base.update(msg.fields)
            if record.exc_info:
                base["exception"] = self.formatException(record.exc_info)
            return json.dumps(base, ensure_ascii=False, default=str)
        text = record.getMessage()
        if text.startswith("{"):
            try:
                base.update(json.loads(text))
            except ValueError:
                base["message"] = text
        else:
            base["message"] = text
        if record.exc_info:
            base["exception"] = self.formatException(record.exc_info)
        return json.dumps(base, ensure_ascii=False, default=str)

    def _head(self, record: logging.LogRecord) -> str:
        """``{"level": ..., "logger": ..., `` (a line's start), one per level and logger."""
        key = (record.levelname, record.name)
        head = self._heads.get(key)
        if head is None:
            head = json.dumps({"level": key[0].lower(), "logger": key[1]}, ensure_ascii=False)[:-1] + ", "
            if len(self._heads) < 1000:
                self._heads[key] = head
        return head


def configure_logging(level: int = logging.INFO) -> None:
    root = logging.getLogger("idp_bridge")
    if any(getattr(h, "_idp_bridge", False) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler._idp_bridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
