"""Routes: metadata, SSO, sign-in, the console jump, health. Thin: the work is in ``Bridge``."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from ..audit import audit
from ..bridge import Bridge, PendingLogin, utcnow
from ..huawei.attributes import Customer
from ..saml.errors import RequestError
from .security import check_csrf, correlation_id, csp_nonce, safe_next
from .sessions import rotate_session

bp = Blueprint("bridge", __name__)


def bridge() -> Bridge:
    b: Bridge = current_app.extensions["idp_bridge"]
    return b


# -- who is logged in (the seam the platform hand-off plugs into) ---------------------------------
def current_customer() -> Customer | None:
    data = session.get("customer")
    if not data:
        return None
    return Customer(**data)


def log_in(customer: Customer, *, method: str) -> None:
    """Start an authenticated session: new token, fresh CSRF secret, the pending step kept server-side."""
    keep = {k: session[k] for k in ("pending", "next") if k in session}
    session.clear()
    rotate_session(session)
    session.update(keep)
    session["customer"] = {k: v for k, v in customer.__dict__.items()}
    session["user_id"] = customer.user_id
    session["authn_instant"] = utcnow().isoformat()
    session["session_index"] = "_" + secrets.token_hex(16)
    session["login_method"] = method
    session["csrf"] = secrets.token_urlsafe(32)


def continue_after_login() -> Response:
    if "pending" in session:
        return redirect(url_for("bridge.sso_continue"))
    target = safe_next(session.pop("next", None))
    return redirect(target or url_for("bridge.home"))


def require_login_redirect() -> Response:
    """Send a visitor with no session to sign in; the pending step stays in the server session."""
    return redirect(url_for("bridge.login"))


# -- metadata -------------------------------------------------------------------------------------
@bp.get("/saml/metadata")
def metadata() -> Response:
    meta = bridge().metadata()
    bridge().store.record_metadata_fetch(remote_addr=request.remote_addr, user_agent=request.user_agent.string,
                                         etag=meta.etag, key_ids=list(meta.key_ids), now=utcnow())
    resp = make_response(meta.xml)
    resp.mimetype = "application/samlmetadata+xml"
    resp.charset = "utf-8"
    resp.set_etag(meta.etag.strip('"'))
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["Content-Disposition"] = 'inline; filename="IDP Metadata.xml"'
    return resp.make_conditional(request)


# -- SSO ------------------------------------------------------------------------------------------
@bp.get("/saml/sso")
def sso() -> Response:
    try:
        raw_query = request.query_string.decode("ascii")
    except UnicodeDecodeError:
        raise RequestError("the query string has non-ASCII bytes; a Redirect-binding message is "
                           "percent-encoded ASCII", code="query_not_ascii") from None
    pending = bridge().accept_redirect_request(raw_query)
    session["pending"] = pending.to_dict()
    if current_customer() is None:
        return require_login_redirect()
    return sso_continue()


@bp.get("/saml/continue")
def sso_continue() -> Response:
    data = session.get("pending")
    if not data:
        raise RequestError("no pending sign-in request in this session (it was completed, expired, or the "
                           "session changed)", code="no_pending_request")
    customer = current_customer()
    if customer is None:
        return require_login_redirect()
    pending = PendingLogin.from_dict(data)
    b = bridge()
    form = b.issue_response(pending, customer, authn_instant=dt.datetime.fromisoformat(session["authn_instant"]),
                            session_index=session["session_index"])
    session.pop("pending", None)
    audit(b.store, "login", "ok", correlation_id=correlation_id(), sp=pending.sp_name, customer=customer.user_id,
          detail={"request_id": pending.request_id, "acs": pending.acs_url,
                  "key_id": b.keys.ring().active.key_id})
    acs = urlsplit(form.action)
    resp = make_response(render_template("post_form.html", form=form))
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    resp.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{csp_nonce()}'; style-src 'nonce-{csp_nonce()}'; "
        f"form-action {acs.scheme}://{acs.netloc}; frame-ancestors 'none'; base-uri 'none'")
    return resp


# -- sign-in with local accounts -----------------------------------------------------------------
@bp.get("/")
def home() -> str:
    b = bridge()
    return render_template("home.html", customer=current_customer(), sps=b.config.service_providers)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    status = 200
    if request.method == "POST":
        check_csrf()
        user_id = request.form.get("user_id", "").strip()[:128]
        password = request.form.get("password", "")[:1024]
        user = bridge().store.authenticate(user_id, password) if user_id and password else None
        if user is not None:
            log_in(Customer(user_id=user.user_id, email=user.email, name=user.name, mobile=user.mobile),
                   method="local")
            return continue_after_login()
        audit(bridge().store, "rejection", "refused", reason_code="login_failed", correlation_id=correlation_id(),
              customer=user_id or None, detail={"reason": "wrong user ID or password"})
        error, status = "Wrong user ID or password.", 401
    return render_template("login.html", error=error), status


@bp.post("/logout")
def logout() -> Response:
    check_csrf()
    session.clear()
    return redirect(url_for("bridge.home"))


# -- the console jump -----------------------------------------------------------------------------
@bp.get("/go")
def go() -> Response:
    b = bridge()
    sp_name = request.args.get("sp")
    sp = b.sps.get(sp_name) if sp_name else b.sps.default()
    service = request.args.get("service")
    b.console_link(sp, service=service, first_login=False)  # validate before any login step
    customer = current_customer()
    if customer is None:
        session["next"] = url_for("bridge.go", **{k: v for k, v in (("sp", sp_name), ("service", service)) if v})
        return require_login_redirect()
    link = b.console_link(sp, service=service, first_login=b.is_first_login(customer))
    audit(b.store, "console_jump", "ok", correlation_id=correlation_id(), sp=sp.name, customer=customer.user_id)
    return redirect(link)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, Any], int]:
    b = bridge()
    report: dict[str, Any] = {"status": "ok"}
    try:
        ring = b.keys.ring()
        now = utcnow()
        report["keys"] = [{"id": e.key_id, "state": e.state, "not_after": e.not_after.isoformat(),
                           "days_left": (e.not_after - now).days,
                           "expiring": (e.not_after - now) < dt.timedelta(days=30)} for e in ring.entries]
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
