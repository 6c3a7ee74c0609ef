"""The operator debug console at ``/_bridge/`` — off unless ``[debug] enabled = true``.

- its own sign-in: the operator password from ``IDP_BRIDGE_DEBUG_PASSWORD`` (compared in constant time),
  throttled per client address and for the one operator account (``login_guard``: 429 + Retry-After);
- every POST carries the session's CSRF token;
- recent SAML exchanges decoded (attributes shown, signatures and certificates redacted), with the
  reason of every rejection from the audit trail;
- key ring status, SP list with metadata freshness;
- attribute-release preview and a "test login" round trip through an in-process Huawei IAM simulator.

While disabled, every ``/_bridge/`` URL answers 404 and nothing is recorded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext
from werkzeug.wrappers import Response

from idp_bridge.diagnostics.exchanges import (
    Exchange,
    ExchangeLog,
    authn_request_exchange,
    bind_exchange,
    response_exchange,
    return_exchange,
)
from idp_bridge.diagnostics.preview import customer_for, preview_assertion
from idp_bridge.errors import ANY_ERROR
from idp_bridge.ops.audit import audit
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.web.auth import bridge
from idp_bridge.web.login_guard import begin_attempt
from idp_bridge.web.security import check_csrf, correlation_id
from idp_bridge.web.sessions import rotate_session

bp = Blueprint("debug", __name__, url_prefix="/_bridge")
_LOG_KEY = "idp_bridge_exchanges"


def _render(template: str, **context: Any) -> str:
    return render_template(template, entity_id=bridge().config.entity_id, **context)


def _enabled() -> bool:
    return bool(bridge().config.debug.enabled)


def exchange_log() -> ExchangeLog:
    log = current_app.extensions.get(_LOG_KEY)
    if log is None:
        log = current_app.extensions[_LOG_KEY] = ExchangeLog(bridge().store, bridge().config.debug.max_exchanges)
    assert isinstance(log, ExchangeLog)
    return log


# --------------------------------------------------------------------------- recording (only when enabled)


@bp.after_app_request
def _record(resp: Response) -> Response:
    path = request.path
    if path not in ("/saml/sso", "/saml/continue", "/huawei/bind", "/huawei/return", "/huawei/recharge") \
            or not _enabled():
        return resp
    try:
        now = dt.datetime.now(dt.UTC)
        cid = correlation_id()
        log = exchange_log()
        if path == "/saml/sso" and request.query_string:
            log.add(authn_request_exchange(request.query_string.decode("latin-1"), path=path, status=resp.status_code,
                                           correlation_id=cid, now=now))
        if path == "/huawei/bind":
            log.add(bind_exchange(request.form.get("bindRequest", ""), request.form.get("SigAlg", ""), path=path,
                                  status=resp.status_code, correlation_id=cid, now=now))
        if path in ("/huawei/return", "/huawei/recharge"):
            log.add(return_exchange(list(request.args.items(multi=True)), resp.headers.get("Location", ""), path=path,
                                    status=resp.status_code, correlation_id=cid, now=now))
        form = g.get("issued_form")
        if form is not None:  # set by web/saml.py when it issues a Response
            log.add(response_exchange(form.saml_response, action=form.action, path=path,
                                      status=resp.status_code, correlation_id=cid, now=now))
    except Exception:  # noqa: BLE001 - the console must never break a login
        current_app.logger.exception("debug console: could not record an exchange")
    return resp


# --------------------------------------------------------------------------- access


@bp.before_request
def _guard() -> Response | None:
    if not _enabled():
        abort(404)
    if request.endpoint == "debug.login":
        return None
    if not session.get("debug_operator"):
        return redirect(url_for("debug.login"))
    return None


def _password_ok(sent: str) -> bool:
    expected = bridge().config.debug.password or ""
    if not expected:
        return False
    # Equal-length digests so the comparison time says nothing about the password.
    return hmac.compare_digest(hashlib.sha256(sent.encode()).digest(), hashlib.sha256(expected.encode()).digest())


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        check_csrf()
        attempt = begin_attempt("console", "operator")
        if not attempt.allowed:
            minutes = -(-attempt.retry_after // 60)
            error = ngettext("Too many sign-in attempts. Try again in %(num)d minute.",
                             "Too many sign-in attempts. Try again in %(num)d minutes.", minutes)
            return _render("debug_login.html", error=error), 429, {"Retry-After": str(attempt.retry_after)}
        if _password_ok(request.form.get("password", "")[:1024]):
            attempt.succeeded()
            keep = {k: session[k] for k in ("customer", "user_id", "authn_instant", "session_index", "login_method")
                    if k in session}
            session.clear()
            rotate_session(session)
            session.update(keep)
            session["debug_operator"] = True
            audit(bridge().store, "debug_login", "ok", correlation_id=correlation_id())
            return redirect(url_for("debug.index"))
        audit(bridge().store, "debug_login", "refused", reason_code="debug_password", correlation_id=correlation_id())
        error = _("Wrong operator password.")
        return _render("debug_login.html", error=error), 401
    return _render("debug_login.html", error=error)


@bp.post("/logout")
def logout() -> Response:
    check_csrf()
    session.pop("debug_operator", None)
    return redirect(url_for("debug.login"))


# --------------------------------------------------------------------------- pages


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return str(_("%(n)d s", n=seconds))
    if seconds < 7200:
        return str(_("%(n)d min", n=seconds // 60))
    return str(_("%(n)d h", n=seconds // 3600))


def _key_rows() -> tuple[list[dict[str, str]], str | None]:
    b = bridge()
    try:
        ring = b.keys.ring()
    except ANY_ERROR as exc:
        return [], exc.operator
    now = dt.datetime.now(dt.UTC)
    rows = [{"key_id": e.key_id, "state": e.state, "algorithm": e.algorithm,
             "not_after": e.not_after.strftime("%Y-%m-%d %H:%M UTC"),
             "days_left": str((e.not_after - now).days), "fingerprint": e.fingerprint} for e in ring.entries]
    return rows, getattr(b.keys, "last_error", None)


def _sp_rows() -> list[dict[str, Any]]:
    b = bridge()
    rows: list[dict[str, Any]] = []
    now = dt.datetime.now(dt.UTC)
    for sp_cfg in b.config.service_providers:
        row: dict[str, Any] = {"name": sp_cfg.name, "site": sp_cfg.site, "source": sp_cfg.metadata,
                               "x_account_type": sp_cfg.x_account_type, "is_url": sp_cfg.metadata_is_url}
        try:
            sp = b.sps.get(sp_cfg.name)
        except ANY_ERROR as exc:
            row.update({"status": "error", "detail": exc.operator})
            rows.append(row)
            continue
        valid_until = sp.metadata.valid_until
        row.update({
            "status": "ok", "entity_id": sp.metadata.entity_id, "age": _age(time.monotonic() - sp.loaded_at),
            "valid_until": valid_until.strftime("%Y-%m-%d") if valid_until else "—",
            "valid_days": (valid_until - now).days if valid_until else None,
            "expired": bool(valid_until and valid_until < now),
            "certificates": [{"fingerprint": fingerprint(c), "not_after": f"{c.not_valid_after_utc:%Y-%m-%d}"}
                             for c in sp.metadata.signing_certificates],
            "acs": list(sp.metadata.acs_locations),
        })
        rows.append(row)
    return rows


PAGE_SIZE = 20


@dataclass(frozen=True)
class ExchangeQuery:
    """The overview's search: correlation id (or request ID), SP name, outcome ("ok" / "refused"), page."""

    q: str = ""
    sp: str = ""
    outcome: str = ""
    page: int = 1

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> ExchangeQuery:
        page = args.get("page", "1")
        outcome = args.get("outcome", "")
        return cls(q=args.get("q", "").strip()[:128], sp=args.get("sp", "")[:64],
                   outcome=outcome if outcome in ("ok", "refused") else "",
                   page=max(1, min(int(page), 10_000)) if page.isdigit() else 1)

    def matches(self, x: Exchange, sp_of: Mapping[str, str], sp_ids: Mapping[str, set[str]]) -> bool:
        if self.q:
            needle = self.q.lower()
            if needle not in x.correlation_id.lower() and not any(
                    needle in str(x.summary.get(k, "")).lower() for k in ("ID", "InResponseTo")):
                return False
        if self.outcome and (self.outcome == "refused") != x.refused:
            return False
        if self.sp:
            ids = sp_ids.get(self.sp, set())
            if sp_of.get(x.correlation_id) != self.sp and not ids & {str(v) for v in x.summary.values()}:
                return False
        return True


def _sp_identifiers() -> dict[str, set[str]]:
    """SP name -> its entity ID and ACS URLs, as they appear in exchange summaries."""
    out: dict[str, set[str]] = {}
    for sp_cfg in bridge().config.service_providers:
        try:
            sp = bridge().sps.get(sp_cfg.name)
        except ANY_ERROR:
            continue
        out[sp_cfg.name] = {sp.metadata.entity_id, *sp.metadata.acs_locations}
    return out


@bp.get("/")
def index() -> str:
    try:
        events = bridge().store.audit.recent(200)
    except Exception:  # noqa: BLE001 - the page still shows the rest
        events = []
    rejections = [e for e in events if e.outcome != "ok"]
    reasons = {e.correlation_id: e for e in rejections if e.correlation_id}
    sp_of = {e.correlation_id: e.sp for e in events if e.correlation_id and e.sp}
    query = ExchangeQuery.from_args(request.args)
    found = [x for x in exchange_log().recent() if query.matches(x, sp_of, _sp_identifiers())]
    pages = max(1, -(-len(found) // PAGE_SIZE))
    page = min(query.page, pages)
    if query.q:
        rejections = [e for e in rejections if query.q.lower() in (e.correlation_id or "").lower()]
    if query.sp:
        rejections = [e for e in rejections if e.sp == query.sp]
    return _render("debug_index.html", exchanges=found[(page - 1) * PAGE_SIZE:page * PAGE_SIZE],
                   total=len(found), page=page, pages=pages, page_size=PAGE_SIZE, query=query,
                   reasons=reasons, rejections=rejections[:30],
                   sp_names=[s.name for s in bridge().config.service_providers])


@bp.get("/trust")
def trust() -> str:
    """Our keys and metadata (download, fingerprints), each SP's metadata freshness (refresh), the test login."""
    keys, key_error = _key_rows()
    return _render("debug_trust.html", keys=keys, key_error=key_error, sps=_sp_rows(),
                   notice=session.pop("debug_notice", None))


@bp.get("/metadata.xml")
def metadata_download() -> Response:
    """Our IdP metadata as a file for Partner Center; not recorded as a fetch (it is no evidence of Huawei's)."""
    resp = make_response(bridge().metadata().xml)
    resp.content_type = "application/samlmetadata+xml; charset=utf-8"
    resp.headers["Content-Disposition"] = 'attachment; filename="IDP Metadata.xml"'
    return resp


@bp.post("/sp/<name>/refresh")
def refresh_sp(name: str) -> Response:
    check_csrf()
    b = bridge()
    try:
        loaded = b.sps.refresh(name)
        notice = ("ok", _("Metadata of %(sp)s reloaded in this worker: entity ID %(entity)s.", sp=name,
                          entity=loaded.metadata.entity_id))
        outcome, reason = "ok", None
    except ANY_ERROR as exc:
        notice = ("bad", _("Metadata of %(sp)s could not be reloaded; the previous copy stays in use: %(why)s",
                           sp=name, why=exc.operator))
        outcome, reason = "refused", exc.code
    audit(b.store, "debug_sp_refresh", outcome, reason_code=reason, correlation_id=correlation_id(),
          sp=name if name in {s.name for s in b.config.service_providers} else None)
    session["debug_notice"] = notice
    return redirect(url_for("debug.trust") + "#sps-section")


@bp.route("/preview", methods=["GET", "POST"])
def preview() -> Any:
    b = bridge()
    result = error = None
    user_id = request.values.get("user_id", "")[:128]
    sp_name = request.values.get("sp", "")
    if request.method == "POST":
        check_csrf()
        try:
            result = preview_assertion(b, customer_for(b, user_id), sp_name or b.sps.default().name)
        except ANY_ERROR as exc:
            error = exc.operator
    return _render("debug_preview.html", result=result, error=error, user_id=user_id, sp=sp_name,
                           sp_names=[s.name for s in b.config.service_providers])
