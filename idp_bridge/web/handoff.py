"""``GET /handoff?token=&next=``: sign in with a platform hand-off token, then continue (``next``: our own path).

For flows that start at Huawei (the pending AuthnRequest waits in the session) or at a page of ours.
"""

from __future__ import annotations

from flask import Blueprint, request, session
from werkzeug.wrappers import Response

from idp_bridge.ops.audit import audit
from idp_bridge.partner.service import accept_handoff
from idp_bridge.web.auth import bridge, continue_after_login, log_in
from idp_bridge.web.security import correlation_id, safe_next

bp = Blueprint("handoff", __name__)


@bp.get("/handoff")
def handoff() -> Response:
    b = bridge()
    claims = accept_handoff(b, request.args.get("token", ""))
    target = safe_next(request.args.get("next"))
    log_in(claims.customer, method="handoff")
    audit(b.store, "handoff", "ok", correlation_id=correlation_id(), customer=claims.customer.user_id,
          detail={"alg": claims.algorithm, "iss": claims.issuer, "jti": claims.jti})
    if target and target != "/saml/continue":
        session["next"] = target
    return continue_after_login()
