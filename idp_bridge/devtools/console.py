"""The operator console's "test login": a throwaway Huawei IAM simulator against this bridge, in-process.

Mounted at ``/_bridge/test-login`` behind the console's own sign-in (the guard of ``web/debug.py``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from werkzeug.wrappers import Response

from idp_bridge.devtools.roundtrip import simulator_round_trip
from idp_bridge.diagnostics.preview import customer_for
from idp_bridge.errors import ANY_ERROR
from idp_bridge.ops.audit import audit
from idp_bridge.web import debug
from idp_bridge.web.auth import bridge
from idp_bridge.web.security import check_csrf, correlation_id

bp = Blueprint("devtools_console", __name__, url_prefix="/_bridge")


@bp.before_request
def _guard() -> Response | None:
    return debug._guard()  # the console's own sign-in guards this page too


@bp.post("/test-login")
def test_login() -> Any:
    check_csrf()
    b = bridge()
    user_id = request.form.get("user_id", "")[:128]
    error = None
    result = None
    try:
        result = simulator_round_trip(b, customer_for(b, user_id), site=request.form.get("site", "cn"))
    except ANY_ERROR as exc:
        error = exc.operator
    audit(b.store, "debug_test_login", "ok" if result and result.ok else "refused", correlation_id=correlation_id(),
          customer=user_id or None)
    return debug._render("debug_test_login.html", result=result, error=error, user_id=user_id)
