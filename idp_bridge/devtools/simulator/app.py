"""The Huawei IAM simulator: a Flask app that plays Huawei Cloud IAM (the SAML SP) for demos and tests.

Routes mimic Huawei IAM (shared spec §1–§6):

- ``GET  /authui/saml/metadata.xml``          its SP metadata
- ``GET  /authui/saml/login``                 start SSO: signed AuthnRequest by HTTP-Redirect to the IdP
- ``POST /authui/saml/SAMLAssertionConsumer`` strict SP-side checks of the Response
- ``GET  /console``                           "Huawei Cloud console (simulator)": who arrived, every check
- ``GET  /simulator/last.json``               the last ACS report, for tests and ``trust-test``
- ``GET|POST /authui/bind``                   first-login bind-or-register, then the signed notification
- ``POST /order/pay``                         pay for an order; "View order details" goes to the partner

Development and test tool only: state lives in memory (see ``state.py``).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, make_response, redirect, render_template, request
from lxml import etree
from werkzeug.wrappers import Response

from idp_bridge.devtools.simulator.config import SimulatorConfig, fetch_metadata
from idp_bridge.devtools.simulator.partner_flows import (
    build_bind_notification,
    new_domain_id,
    new_order_id,
    payment_return_link,
)
from idp_bridge.devtools.simulator.state import ConsoleSession, PendingLogin, SimulatorState
from idp_bridge.errors import ANY_ERROR
from idp_bridge.saml.bindings import decode_post, encode_redirect
from idp_bridge.saml.checks import Check
from idp_bridge.saml.metadata import build_sp_metadata
from idp_bridge.saml.request_builder import build_authn_request, new_request_id
from idp_bridge.saml.response_checks import (
    IdpMetadata,
    ResponseReport,
    check_response,
    parse_idp_metadata,
)
from idp_bridge.saml.xml import parse_untrusted

SESSION_COOKIE = "hwsim_session"


def create_simulator_app(config: SimulatorConfig) -> Flask:
    """Build the simulator app. ``app.extensions["huawei_simulator"]`` holds its ``SimulatorState``."""
    app = Flask(__name__, template_folder="templates")
    state = SimulatorState()
    app.extensions["huawei_simulator"] = state
    sp_metadata = build_sp_metadata(entity_id=config.entity_id, acs_url=config.acs_url,
                                    certificate=config.signer.certificate,
                                    authn_requests_signed=True, want_assertions_signed=True)

    @app.context_processor
    def _page_globals() -> dict[str, Any]:
        return {"site": config.huawei_site, "config": config}

    def page(template: str, status: int = 200, **context: Any) -> Response:
        resp = make_response(render_template(template, **context), status)
        resp.headers["Cache-Control"] = "no-store"
        return resp

    def error_page(status: int, title: str, message: str) -> Response:
        return page("error.html", status, title=title, message=message)

    def load_idp_or_page(x_account_type: str) -> IdpMetadata | Response:
        """The IdP metadata for this platform, fetched fresh; a 502 page naming the problem when unusable."""
        try:
            return load_idp(x_account_type)
        except ANY_ERROR as exc:
            return error_page(502, "IdP metadata unusable",
                              f"The IdP metadata for xAccountType {x_account_type!r} could not be used: "
                              f"{exc.operator}")

    def load_idp(x_account_type: str) -> IdpMetadata:
        return parse_idp_metadata(fetch_metadata(config.idp_metadata[x_account_type]))

    @app.get("/authui/saml/metadata.xml")
    def metadata() -> Response:
        resp = make_response(sp_metadata)
        resp.headers["Content-Type"] = "application/samlmetadata+xml"
        return resp

    @app.get("/authui/saml/login")
    def login() -> Response:
        x_account_type = request.args.get("xAccountType", "")
        if not x_account_type or x_account_type not in config.idp_metadata:
            known = ", ".join(sorted(config.idp_metadata)) or "(none configured)"
            return error_page(400, "xAccountType missing or unknown",
                              f"The login link must carry xAccountType=<partner platform id>. Received "
                              f"{x_account_type or '(nothing)'!r}; this simulator knows: {known}.")
        is_first_login = request.args.get("isFirstLogin", "false").strip().lower() == "true"
        service = request.args.get("service") or None
        idp = load_idp_or_page(x_account_type)
        if isinstance(idp, Response):
            return idp
        now = config.clock()
        request_id = new_request_id()
        xml = build_authn_request(issuer=config.entity_id, destination=idp.sso_redirect_url,
                                  acs_url=config.acs_url, now=now, request_id=request_id,
                                  sp_name_qualifier=config.entity_id)
        pending = state.add_pending(request_id=request_id, x_account_type=x_account_type, service=service,
                                    is_first_login=is_first_login, now=now)
        url = encode_redirect(xml, endpoint=idp.sso_redirect_url, relay_state=pending.relay_state,
                              signer=config.signer)
        return redirect(url, 302)

    @app.post("/authui/saml/SAMLAssertionConsumer")
    def acs() -> Response:
        raw = request.form.get("SAMLResponse", "")
        relay_state = request.form.get("RelayState")
        if not raw:
            return error_page(400, "No SAMLResponse", "The ACS expects a form POST with SAMLResponse.")
        try:
            xml = decode_post(raw)
        except ANY_ERROR as exc:
            return error_page(400, "SAMLResponse unreadable", exc.operator)

        pending = state.find_pending(relay_state=relay_state, request_id=_claimed_in_response_to(xml))
        if pending is not None:
            x_account_type = pending.x_account_type
            state.consume(pending.request_id)  # one attempt per AuthnRequest, successful or not
            expected_ids: set[str] = {pending.request_id}
        elif len(config.idp_metadata) == 1:
            x_account_type = next(iter(config.idp_metadata))
            expected_ids = state.outstanding_ids(x_account_type)
        else:
            report = ResponseReport(checks=[_relay_check(None, relay_state)])
            state.last_report = _report_json(report, None, None, relay_state)
            return page("refused.html", 403, report=report, x_account_type=None)
        idp = load_idp_or_page(x_account_type)
        if isinstance(idp, Response):
            return idp
        report = check_response(xml, idp=idp, sp_entity_id=config.entity_id, acs_url=config.acs_url,
                                expected_request_ids=expected_ids, now=config.clock(), skew=config.skew,
                                require_signed_assertion=True)
        report.checks.insert(0, _relay_check(pending, relay_state))
        state.last_report = _report_json(report, pending, x_account_type, relay_state)
        if not report.ok:
            return page("refused.html", 403, report=report, x_account_type=x_account_type)

        x_user_id = (report.attributes.get("xUserId") or [""])[0]
        session = ConsoleSession(x_account_type=x_account_type, x_user_id=x_user_id,
                                 service=pending.service if pending else None,
                                 is_first_login=bool(pending and pending.is_first_login),
                                 report=state.last_report)
        token = state.new_session(session)
        resp = redirect("/authui/bind" if session.is_first_login else "/console", 302)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Lax",
                        secure=config.base_url.startswith("https://"))
        return resp

    def current_session() -> ConsoleSession | None:
        return state.session(request.cookies.get(SESSION_COOKIE))

    @app.get("/console")
    def console() -> Response:
        session = current_session()
        if session is None:
            return error_page(401, "Not logged in",
                              "No simulator session: log in through the partner platform first.")
        return page("console.html", session=session)

    @app.get("/simulator/last.json")
    def last_json() -> Response:
        if state.last_report is None:
            resp = jsonify({"error": "no Response has reached the ACS yet"})
            resp.status_code = 404
            return resp
        return jsonify(state.last_report)

    @app.route("/authui/bind", methods=["GET", "POST"])
    def bind() -> Response:
        session = current_session()
        if session is None:
            return error_page(401, "Not logged in", "No simulator session: the bind page follows a first login.")
        if request.method == "GET":
            return page("bind.html", session=session)
        action = request.form.get("action", "bind")
        domain_name = (request.form.get("domain_name") or "").strip() or f"hw_{session.x_user_id}"[:64]
        fields = build_bind_notification(config.signer, x_user_id=session.x_user_id, domain_name=domain_name,
                                         domain_id=new_domain_id())
        session.bound = True
        return page("autopost.html", action=action, target=config.bind_notify_url, fields=fields,
                    session=session)

    @app.post("/order/pay")
    def pay() -> Response:
        session = current_session()
        if session is None:
            return error_page(401, "Not logged in", "No simulator session.")
        order_id = new_order_id()
        session.orders.append(order_id)
        link = payment_return_link(config.payment_return_url, order_id) if config.payment_return_url else None
        return page("paid.html", session=session, order_id=order_id, return_link=link)

    return app


def _claimed_in_response_to(xml: bytes) -> str | None:
    """The Response's InResponseTo, unverified: used only to find which login it claims to answer."""
    try:
        value = parse_untrusted(xml, what="SAML Response").get("InResponseTo")
    except (*ANY_ERROR, etree.LxmlError):
        return None
    return str(value) if value is not None else None


def _relay_check(pending: PendingLogin | None, relay_state: str | None) -> Check:
    expected = (pending.relay_state if pending is not None
                else "the RelayState of an outstanding login, returned unchanged")
    return Check("relay_state", pending is not None and relay_state == pending.relay_state, expected,
                 relay_state if relay_state is not None else "(absent)")


def _report_json(report: ResponseReport, pending: PendingLogin | None, x_account_type: str | None,
                 relay_state: str | None) -> dict[str, Any]:
    data = report.to_dict()
    data.update({"x_account_type": x_account_type, "relay_state": relay_state,
                 "service": pending.service if pending else None,
                 "is_first_login": pending.is_first_login if pending else None})
    return data
