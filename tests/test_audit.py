"""Audit events (ops/audit.py): the JSON log line, the stored row and the spooled line, to the character.

The expected texts are written out here the way the audit code has always made them (``json.dumps`` of
these keys in this order), so a faster implementation has to produce exactly the same bytes."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idp_bridge.ops import audit as audit_mod
from idp_bridge.ops.audit import JsonFormatter, JsonLine, audit, audit_prepared, prepare_audit
from idp_bridge.store import Store
from idp_bridge.store.audit import _SECRET_KEY_RE, scrub_detail

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
UID = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")  # uuid4().hex

LOGIN_DETAIL = {"request_id": "_b" + "0123456789abcdef" * 2, "acs": "https://sp0000.bench.example/acs",
                "key_id": "91d255257495a215"}
DETAILS: list[dict[str, Any]] = [
    LOGIN_DETAIL,
    {"name": "Zoë 山田", "del": "a\x7fb", "literal": "\\u00e9", "ctl": "tab\there\nnl\x01", "quote": 'say "hi"'},
    {"password": "hunter2", "nested": {"SAMLResponse": "PHNhbWw+", "ok": [1, 2.5, True, None, ("t", "u")]},
     "body": "x" * 10_000, "k" * 100: "long key", "when": NOW, 7: "int key"},  # type: ignore[dict-item]  # a non-str key on purpose
    {"deep": {"a": {"b": {"c": {"d": {"e": "too deep"}, "s": "a string five levels down", "n": 5}}}},
     "many": list(range(80)), "tuple": tuple(range(60))},
    {f"key{i}": i for i in range(70)},
]


def _reference_scrub(value: Any, depth: int = 0) -> Any:
    """scrub_detail as it was written first (store/audit.py): the bounds and redaction it must keep."""
    if depth > 4:
        return "[too deep]"
    if isinstance(value, dict):
        return {str(k)[:64]: "[redacted]" if _SECRET_KEY_RE.search(str(k)[:64]) else _reference_scrub(v, depth + 1)
                for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [_reference_scrub(item, depth + 1) for item in list(value)[:50]]
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return text if len(text) <= 512 else text[:512] + "…"


@pytest.mark.parametrize("detail", DETAILS, ids=["login", "unicode", "secrets", "deep", "wide"])
def test_scrub_detail_bounds_and_redacts_as_ever(detail: dict[str, Any]) -> None:
    assert scrub_detail(detail) == _reference_scrub(detail)
    assert json.dumps(scrub_detail(detail)) == json.dumps(_reference_scrub(detail))  # order and types too
    assert scrub_detail(scrub_detail(detail)) == scrub_detail(detail)  # scrubbing once is enough


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the ``idp_bridge.audit`` logger writes through the app's formatter, INFO and up."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("idp_bridge.audit")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _expected_line(event: str, outcome: str, reason: str | None, correlation_id: str | None, sp: str | None,
                   customer: str | None, detail: dict[str, Any] | None) -> str:
    line: dict[str, Any] = {"level": "info", "logger": "idp_bridge.audit", "time": NOW.isoformat(), "event": event,
                            "outcome": outcome, "reason": reason, "correlation_id": correlation_id, "sp": sp,
                            "customer": customer}
    if detail:
        line["detail"] = _reference_scrub(detail)
    return json.dumps(line, ensure_ascii=False, default=str)


def _rows(store: Store) -> list[tuple[Any, ...]]:
    """The audit rows as the database holds them (PostgreSQL: as text)."""
    columns = ["at", "event", "outcome", "reason_code", "correlation_id", "sp", "customer", "detail", "event_uid"]
    cast = columns if store.dialect == "sqlite" else [f"{c}::text" for c in columns]
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            f"SELECT {', '.join(cast)} FROM audit_events ORDER BY id").all()]  # noqa: S608 - our own names


def _stamp(store: Store, at: dt.datetime) -> str:
    return (at.replace(tzinfo=None).isoformat(" ", "microseconds") if store.dialect == "sqlite"
            else at.isoformat(" ", "microseconds").replace("+00:00", "+00"))


@pytest.mark.parametrize("detail", DETAILS, ids=["login", "unicode", "secrets", "deep", "wide"])
def test_login_line_and_row(store: Store, lines: io.StringIO, detail: dict[str, Any]) -> None:
    with store.transaction():
        audit(store, "login", "ok", correlation_id="5e8e5063ee2e7096", sp="sp0000", customer="cust-000001",
              detail=detail, now=NOW)
    assert lines.getvalue() == _expected_line("login", "ok", None, "5e8e5063ee2e7096", "sp0000", "cust-000001",
                                              detail) + "\n"
    ((at, event, outcome, reason, cid, sp, customer, stored_detail, uid),) = _rows(store)
    assert (at, event, outcome, reason, cid, sp, customer) == (
        _stamp(store, NOW), "login", "ok", None, "5e8e5063ee2e7096", "sp0000", "cust-000001")
    if store.dialect == "sqlite":
        assert stored_detail == json.dumps(_reference_scrub(detail))  # the text, escapes and all
    assert json.loads(stored_detail) == json.loads(json.dumps(_reference_scrub(detail)))
    assert UID.fullmatch(uid)


@pytest.mark.parametrize("detail", [None, {}])
def test_no_detail(store: Store, lines: io.StringIO, detail: dict[str, Any] | None) -> None:
    audit(store, "key", "ok", reason_code="key_import", detail=detail, now=NOW)
    assert lines.getvalue() == _expected_line("key", "ok", "key_import", None, None, None, None) + "\n"
    assert '"detail"' not in lines.getvalue()
    ((*_, stored_detail, _uid),) = _rows(store)
    assert stored_detail == "null"  # JSON null, not SQL NULL


def test_columns_are_cut_in_the_row_not_in_the_line(store: Store, lines: io.StringIO) -> None:
    cid, sp, customer = "c" * 500, "https://" + "s" * 2000, "u" * 300
    audit(store, "login", "ok", correlation_id=cid, sp=sp, customer=customer, now=NOW)
    assert lines.getvalue() == _expected_line("login", "ok", None, cid, sp, customer, None) + "\n"
    ((_at, _e, _o, _r, stored_cid, stored_sp, stored_customer, _d, _u),) = _rows(store)
    assert (stored_cid, stored_sp, stored_customer) == (cid[:128], sp[:1024], customer[:256])


def test_each_event_its_own_uid(store: Store) -> None:
    for _ in range(3):
        audit(store, "login", "ok", detail=LOGIN_DETAIL, now=NOW)
    uids = [row[-1] for row in _rows(store)]
    assert len(set(uids)) == 3 and all(UID.fullmatch(u) for u in uids)


def test_refusals_beyond_the_budget_are_only_logged_then_summed_up(store: Store, lines: io.StringIO) -> None:
    budget = audit_mod.REFUSALS_PER_MINUTE
    for _ in range(budget + 5):
        audit(store, "login", "refused", reason_code="bad_signature", detail={"request_id": "_r"}, now=NOW)
    assert len(_rows(store)) == budget
    assert len(lines.getvalue().splitlines()) == budget + 5  # every one is in the log
    later = NOW + dt.timedelta(minutes=1)
    audit(store, "login", "refused", reason_code="bad_signature", detail={"request_id": "_r2"}, now=later)
    *_, summary, last = _rows(store)
    assert summary[1:8] == ("login", "refused", "bad_signature", None, None, None, summary[7])
    assert json.loads(summary[7]) == {"suppressed": 5, "minute": "2024-05-06T07:08:00+00:00",
                                      "note": "refusals of this kind beyond the per-minute budget; "
                                              "each one is in the log"}
    assert json.loads(last[7]) == {"request_id": "_r2"} and last[0] == _stamp(store, later)


def test_an_outcome_the_store_refuses_is_logged_not_raised(store: Store, lines: io.StringIO,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    audit(store, "login", "maybe", now=NOW)
    assert lines.getvalue().splitlines()[0] == _expected_line("login", "maybe", None, None, None, None, None)
    assert any(r.getMessage() == "could not store audit event login/maybe" and r.exc_info
               for r in caplog.records)
    assert _rows(store) == []


def test_logger_off_for_info_still_stores(store: Store, lines: io.StringIO) -> None:
    logging.getLogger("idp_bridge.audit").setLevel(logging.WARNING)
    audit(store, "login", "ok", detail=LOGIN_DETAIL, now=NOW)
    assert lines.getvalue() == ""
    assert len(_rows(store)) == 1


def test_without_a_store_only_the_line(lines: io.StringIO) -> None:
    audit(None, "login", "ok", sp="sp0000", detail=LOGIN_DETAIL, now=NOW)
    assert lines.getvalue() == _expected_line("login", "ok", None, None, "sp0000", None, LOGIN_DETAIL) + "\n"


def test_database_away_spools_then_stores_once(tmp_path: Path, store: Store, lines: io.StringIO) -> None:
    away = Store.from_url(f"sqlite:///{tmp_path}/unmigrated.db")  # no tables: every write fails
    spool = audit_mod.configure_spool(tmp_path / "spool")
    assert spool is not None
    try:
        detail = DETAILS[1]
        audit(away, "login", "ok", correlation_id="c" * 500, sp="sp0000", customer="cust-1", detail=detail,
              now=NOW)
        (spooled,) = spool.path.read_text(encoding="utf-8").splitlines()
        uid = json.loads(spooled)["event_uid"]
        assert UID.fullmatch(uid)
        assert spooled == json.dumps({"event": "login", "outcome": "ok", "reason_code": None,
                                      "correlation_id": "c" * 500, "sp": "sp0000", "customer": "cust-1",
                                      "detail": _reference_scrub(detail), "event_uid": uid, "at": NOW.isoformat()},
                                     ensure_ascii=False, separators=(",", ":"), default=str)
        assert lines.getvalue() == _expected_line("login", "ok", None, "c" * 500, "sp0000", "cust-1",
                                                  detail) + "\n"
        spool.replay(store)
        spool.append(json.loads(spooled))  # the same event spooled twice (a replay cut short): stored once
        spool.replay(store)
        ((at, _e, _o, _r, cid, _sp, _c, stored_detail, stored_uid),) = _rows(store)
        assert (at, cid, stored_uid) == (_stamp(store, NOW), "c" * 128, uid)
        assert json.loads(stored_detail) == _reference_scrub(detail)
    finally:
        audit_mod.configure_spool(None)
        away.dispose()


def test_database_away_and_no_spool_logs_the_uid(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    away = Store.from_url(f"sqlite:///{tmp_path}/unmigrated.db")
    try:
        audit(away, "login", "ok", now=NOW)
    finally:
        away.dispose()
    (error,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    fields = json.loads(error.getMessage())
    assert list(fields) == ["event", "event_uid", "error"] and fields["event"] == "audit_not_stored"
    assert UID.fullmatch(fields["event_uid"])


def test_prepared_before_the_transaction_is_the_same_event(store: Store, lines: io.StringIO) -> None:
    audit(store, "login", "ok", correlation_id="c1", sp="sp0000", customer="cust-1", detail=LOGIN_DETAIL, now=NOW)
    prepared = prepare_audit(store, "login", "ok", correlation_id="c1", sp="sp0000", customer="cust-1",
                             detail=LOGIN_DETAIL, now=NOW)
    with store.transaction():
        audit_prepared(prepared)
    first, second = lines.getvalue().splitlines()
    assert first == second
    direct, ahead = _rows(store)
    assert direct[:-1] == ahead[:-1] and direct[-1] != ahead[-1]
    audit_prepared(prepared)  # the same event again: logged, but stored once
    assert len(_rows(store)) == 2 and len(lines.getvalue().splitlines()) == 3


def test_prepared_refusal_counts_against_the_budget(store: Store) -> None:
    for _ in range(audit_mod.REFUSALS_PER_MINUTE + 1):
        audit_prepared(prepare_audit(store, "login", "refused", reason_code="x", now=NOW))
    assert len(_rows(store)) == audit_mod.REFUSALS_PER_MINUTE


def _reference_format(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """JsonFormatter.format as it was written first: one dict, merged, dumped."""
    base: dict[str, Any] = {"level": record.levelname.lower(), "logger": record.name}
    if isinstance(record.msg, JsonLine) and not record.args:
        base.update(record.msg.fields)
    else:
        msg = record.getMessage()
        try:
            base.update(json.loads(msg) if msg.startswith("{") else {"message": msg})
        except ValueError:
            base["message"] = msg
    if record.exc_info:
        base["exception"] = formatter.formatException(record.exc_info)
    return json.dumps(base, ensure_ascii=False, default=str)


@pytest.mark.parametrize("msg", [
    JsonLine({"event": "x", "n": 1, "é": "ü", "when": NOW}),
    JsonLine({"level": "override", "event": "x"}),
    JsonLine({"logger": "other"}),
    JsonLine({}),
    JsonLine({1: "int key", None: "none key"}),  # type: ignore[dict-item]  # non-str keys on purpose
    '{"event": "text json", "n": 2}',
    "{not json",
    "plain %s",
], ids=["fields", "level", "logger", "empty", "odd-keys", "text-json", "bad-json", "plain"])
@pytest.mark.parametrize("exc", [False, True])
def test_formatter_output_is_unchanged(msg: Any, exc: bool) -> None:
    formatter = JsonFormatter()
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys
            exc_info = sys.exc_info()
    args = ("arg",) if msg == "plain %s" else ()
    record = logging.LogRecord("idp_bridge.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    expected = _reference_format(record, formatter)
    assert formatter.format(record) == expected
    assert formatter.format(record) == expected  # and again (anything cached gives the same)
