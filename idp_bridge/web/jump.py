"""The console jump: ``GET /go?sp=&service=[&token=]`` sends a signed-in customer to Huawei's login link.

With ``token`` (a platform hand-off) the customer is signed in and sent on in one step; ``service`` is
checked before the token's ``jti`` is spent.
"""

from __future__ import annotations

from flask import Blueprint, redirect, request, session, url_for
from werkzeug.wrappers import Response

from idp_bridge.ops.audit import audit
from idp_bridge.partner.service import accept_handoff
from idp_bridge.web.auth import bridge, current_customer, log_in, require_login_redirect
from idp_bridge.web.security import correlation_id

bp = Blueprint("jump", __name__)


@bp.get("/go")
def go() -> Response:
    b = bridge()
    sp_name = request.args.get("sp")
    sp = b.sps.requested(sp_name)
    service = request.args.get("service")
    b.console_link(sp, service=service, first_login=False)  # validate before any login step (or jti use)
    token = request.args.get("token")
    if token:  # the platform's hand-off: sign in and jump in one step
        claims = accept_handoff(b, token)
        log_in(claims.customer, method="handoff")
        audit(b.store, "handoff", "ok", correlation_id=correlation_id(), sp=sp.name, customer=claims.customer.user_id,
              detail={"alg": claims.algorithm, "iss": claims.issuer, "jti": claims.jti})
    customer = current_customer()
    if customer is None:
        params: dict[str, str] = {k: v for k, v in (("sp", sp_name), ("service", service)) if v}
        session["next"] = url_for("jump.go", **params)  # type: ignore[arg-type]
        return require_login_redirect()
    first_login = b.is_first_login(customer)
    link = b.console_link(sp, service=service, first_login=first_login)
    audit(b.store, "console_jump", "ok", correlation_id=correlation_id(), sp=sp.name, customer=customer.user_id,
          detail={"is_first_login": first_login})
    return redirect(link)
