"""Who is logged in: the bridge session, and the seam a platform hand-off plugs into."""

from __future__ import annotations

import secrets
from urllib.parse import urlencode

from flask import current_app, redirect, session, url_for
from werkzeug.wrappers import Response

from idp_bridge.huawei.attributes import Customer
from idp_bridge.idp.identity_provider import IdentityProvider, utcnow
from idp_bridge.web.security import safe_next
from idp_bridge.web.sessions import rotate_session


def bridge() -> IdentityProvider:
    b: IdentityProvider = current_app.extensions["idp_bridge"]
    return b


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
        return redirect(url_for("saml.sso_continue"))
    target = safe_next(session.pop("next", None))
    return redirect(target or url_for("account.home"))


def require_login_redirect() -> Response:
    """Send a visitor with no session to sign in; the pending step stays in the server session.

    With ``[platform] login_url`` the platform signs the customer in and sends the browser to
    ``return_to`` (always our own ``/handoff`` URL) with ``&token=<hand-off JWT>`` appended.
    Without it, the bridge's local sign-in form (demo, small platforms).
    """
    cfg = bridge().config
    if not cfg.platform.login_url:
        return redirect(url_for("account.login"))
    step = "/saml/continue" if "pending" in session else (safe_next(session.get("next")) or "/")
    return_to = cfg.base_url + "/handoff?" + urlencode({"next": step})
    return redirect(cfg.platform.login_url + "?" + urlencode({"return_to": return_to}))
