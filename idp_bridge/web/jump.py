"""The console jump: ``GET /go?sp=&service=[&token=]`` sends a signed-in customer to Huawei's login link.

With ``token`` (a platform hand-off) the customer is signed in and sent on in one step; ``service`` is
checked before the token's ``jti`` is spent. A token for another customer than the one signed in is held
behind a confirmation page (handoff.py). A jump with ``isFirstLogin=true`` is recorded in the database:
it allows the one bind notice Huawei sends back (partner/service.py, store/bind_guard.py).
"""

from __future__ import annotations

from flask import Blueprint, redirect, request, session, url_for
from werkzeug.wrappers import Response

from idp_bridge.ops.audit import audit
from idp_bridge.partner.service import record_first_login_jump
from idp_bridge.web.auth import bridge, current_customer, require_login_redirect
from idp_bridge.web.handoff import sign_in_with_token
from idp_bridge.web.security import correlation_id

bp = Blueprint("jump", __name__)


@bp.get("/go")
def go() -> Response | tuple[str, int]:
    b = bridge()
    sp_name = request.args.get("sp")
    sp = b.sps.requested(sp_name)
    service = request.args.get("service")
    b.console_link(sp, service=service, first_login=False)  # validate before any login step (or jti use)
    params: dict[str, str] = {k: v for k, v in (("sp", sp_name), ("service", service)) if v}
    here: str = url_for("jump.go", **params)  # type: ignore[arg-type]
    token = request.args.get("token")
    if token:  # the platform's hand-off: sign in and jump in one step
        held = sign_in_with_token(b, token, then=here, sp=sp.name)
        if held is not None:
            return held
    customer = current_customer()
    if customer is None:
        session["next"] = here
        return require_login_redirect()
    first_login = b.is_first_login(customer)
    link = b.console_link(sp, service=service, first_login=first_login)
    detail: dict[str, object] = {"is_first_login": first_login}
    if first_login:
        detail["bind_window_until"] = record_first_login_jump(b, customer.user_id, sp_name=sp.name).isoformat()
    audit(b.store, "console_jump", "ok", correlation_id=correlation_id(), sp=sp.name, customer=customer.user_id,
          detail=detail)
    return redirect(link)
