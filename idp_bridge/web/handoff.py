"""``GET /handoff?token=&next=``: sign in with a platform hand-off token, then continue (``next``: our own path).

For flows that start at Huawei (the pending AuthnRequest waits in the session) or at a page of ours.

Rule (login CSRF): a token never silently replaces the signed-in customer. When the browser already
holds a session for another customer, the token is spent and its verified claims wait server-side in
that session (5 minutes at most) behind a confirmation page naming both customers (HTTP 409, since the
token was not honoured as asked); only ``POST /handoff/confirm`` with the session's CSRF token and the
page's one-time nonce switches. ``/go?token=`` uses the same step (``sign_in_with_token``).
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from typing import Any

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from idp_bridge.errors import RequestError
from idp_bridge.huawei.attributes import Customer
from idp_bridge.idp.identity_provider import IdentityProvider, utcnow
from idp_bridge.ops.audit import audit
from idp_bridge.partner.service import accept_handoff
from idp_bridge.web.auth import bridge, continue_after_login, current_customer, log_in
from idp_bridge.web.security import check_csrf, correlation_id, safe_next

bp = Blueprint("handoff", __name__)

SWITCH_KEY = "handoff_switch"
SWITCH_TTL = dt.timedelta(minutes=5)


def sign_in_with_token(b: IdentityProvider, token: str, *, then: str | None, sp: str | None = None
                       ) -> tuple[str, int] | None:
    """Verify and spend ``token``; sign its customer in, or (another customer is signed in) return the
    confirmation page to show instead. ``then``: where to continue after a confirmed switch (our own path)."""
    claims = accept_handoff(b, token)
    customer = claims.customer
    detail = {"alg": claims.algorithm, "iss": claims.issuer, "jti": claims.jti}
    signed_in = current_customer()
    if signed_in is not None and signed_in.user_id != customer.user_id:
        nonce = secrets.token_urlsafe(24)
        session[SWITCH_KEY] = {"customer": dict(customer.__dict__), "nonce": nonce, "then": safe_next(then),
                               "sp": sp, "expires": (utcnow() + SWITCH_TTL).isoformat(), "detail": detail}
        audit(b.store, "handoff", "refused", reason_code="identity_switch_held", correlation_id=correlation_id(), sp=sp,
              customer=customer.user_id, detail=dict(detail, signed_in=signed_in.user_id))
        return render_template("switch_account.html", current=signed_in, new=customer, nonce=nonce), 409
    log_in(customer, method="handoff")
    audit(b.store, "handoff", "ok", correlation_id=correlation_id(), sp=sp, customer=customer.user_id, detail=detail)
    return None


@bp.get("/handoff")
def handoff() -> Response | tuple[str, int]:
    b = bridge()
    target = safe_next(request.args.get("next"))
    held = sign_in_with_token(b, request.args.get("token", ""), then=target)
    if held is not None:
        return held
    return _continue(target)


def _continue(target: str | None) -> Response:
    if target and target != "/saml/continue":
        session["next"] = target
    return continue_after_login()


@bp.post("/handoff/confirm")
def confirm() -> Response:
    """The customer's deliberate choice on the confirmation page: ``choice=switch`` or ``choice=stay``."""
    b = bridge()
    check_csrf()  # the signed-in customer's own session secret: a cross-site form cannot carry it
    held: Any = session.pop(SWITCH_KEY, None)
    sent = request.form.get("nonce", "")
    if not isinstance(held, dict) or not sent or not hmac.compare_digest(str(held.get("nonce", "")), sent):
        raise RequestError("no account switch is waiting in this session for this confirmation (expired, already "
                           "answered, or a forged form)", code="handoff_switch_unknown")
    if dt.datetime.fromisoformat(str(held["expires"])) <= utcnow():
        raise RequestError(f"the account switch expired at {held['expires']}; open the platform's link again",
                           code="handoff_switch_expired")
    customer = Customer(**held["customer"])
    previous = current_customer()
    if request.form.get("choice") != "switch":
        audit(b.store, "handoff", "refused", reason_code="identity_switch_declined", correlation_id=correlation_id(),
              sp=held.get("sp"), customer=customer.user_id,
              detail={"signed_in": previous.user_id if previous else None})
        return redirect(url_for("account.home"), 303)
    log_in(customer, method="handoff")
    audit(b.store, "handoff", "ok", reason_code="identity_switch_confirmed", correlation_id=correlation_id(),
          sp=held.get("sp"), customer=customer.user_id,
          detail=dict(held.get("detail") or {}, previous=previous.user_id if previous else None))
    target = safe_next(held.get("then"))
    session.pop("pending", None)  # an AuthnRequest begun for the previous customer is not carried across
    if target == "/saml/continue":
        target = None
    return _continue(target)
