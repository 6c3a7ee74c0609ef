"""SAML endpoints: our metadata and the SSO service."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from flask import Blueprint, g, make_response, request, session
from werkzeug.wrappers import Response

from idp_bridge.errors import RequestError
from idp_bridge.idp.identity_provider import AnsweredRefusal, PendingLogin, PostForm, utcnow
from idp_bridge.ops.audit import audit, audit_prepared, prepare_audit
from idp_bridge.web.auth import bridge, current_customer, require_login_redirect
from idp_bridge.web.post_form import render_post_form
from idp_bridge.web.security import correlation_id, csp_nonce
from idp_bridge.web.sessions import persist_session

bp = Blueprint("saml", __name__)


@bp.get("/saml/metadata")
def metadata() -> Response:
    b = bridge()
    meta = b.metadata()  # built once per key set
    # A fetch is evidence for `keys activate` only when it came from a network in that SP's
    # ``metadata_fetchers`` (``?sp=NAME``, if given, must name that SP): rotation.judge_fetch decides, and
    # `keys status` says which fetches counted and why others did not. Only news is written: the first
    # fetch of each (address, tag, ETag), repeats after a while, anonymous ones within a budget.
    sp_name = request.args.get("sp")
    sp = sp_name if sp_name in {s.name for s in b.config.service_providers} else None
    b.record_metadata_fetch(remote_addr=request.remote_addr, user_agent=request.user_agent.string, meta=meta,
                            sp=sp, now=utcnow())
    resp = make_response(meta.xml)
    resp.content_type = "application/samlmetadata+xml; charset=utf-8"
    resp.set_etag(meta.etag.strip('"'))
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["Content-Disposition"] = 'inline; filename="IDP Metadata.xml"'
    return resp.make_conditional(request)


@bp.get("/saml/sso")
def sso() -> Response:
    try:
        raw_query = request.query_string.decode("ascii")
    except UnicodeDecodeError:
        raise RequestError("the query string has non-ASCII bytes; a Redirect-binding message is "
                           "percent-encoded ASCII", code="query_not_ascii") from None
    now = utcnow()
    b = bridge()
    try:
        pending = b.check_redirect_request(raw_query, now=now)
    except AnsweredRefusal as refused:  # trusted request we cannot serve (NameIDPolicy): tell the SP, signed
        audit(b.store, "login", "refused", reason_code=refused.code, correlation_id=correlation_id(),
              sp=refused.pending.sp_name, detail={"request_id": refused.pending.request_id,
                                                  "reason": refused.operator})
        return post_form_page(refused.form)
    return _answer(pending, claim_at=now)


@bp.get("/saml/continue")
def sso_continue() -> Response:
    data = session.get("pending")
    if not data:
        raise RequestError("no pending sign-in request in this session (it was completed, expired, or the "
                           "session changed)", code="no_pending_request")
    return _answer(bridge().pending_login(data), claim_at=None)  # too old: refused (the handler drops it)


def _answer(pending: PendingLogin, *, claim_at: dt.datetime | None) -> Response:
    """Sign the answer (or send the customer to sign in), then commit everything it wrote in one
    transaction: the request's replay claim (a fresh request: ``claim_at``), the audit row, the session."""
    customer = current_customer()
    b = bridge()
    fresh = customer is not None and not pending.needs_fresh_login(
        dt.datetime.fromisoformat(session["authn_instant"]))
    if not fresh and not pending.is_passive:
        session["pending"] = pending.to_dict()  # the request waits server-side for the sign-in
        with b.store.transaction():
            if claim_at is not None:
                b.claim_request(pending, now=claim_at)
            persist_session()
        return require_login_redirect()
    session.pop("pending", None)  # answered now (and an older, abandoned one is dropped)
    if not fresh:
        form = b.issue_no_passive(pending)
        outcome, reason, who = "refused", "no_passive", None
        detail = {"request_id": pending.request_id, "reason": "IsPassive request and no (fresh) sign-in"}
    else:
        assert customer is not None
        form = b.issue_response(pending, customer, authn_instant=dt.datetime.fromisoformat(session["authn_instant"]),
                                session_index=session["session_index"])
        outcome, reason, who = "ok", None, customer.user_id
        detail = {"request_id": pending.request_id, "acs": pending.acs_url, "key_id": form.key_id}
    # The audit row is built before the transaction (on SQLite it holds the database's write lock).
    event = prepare_audit(b.store, "login", outcome, reason_code=reason, correlation_id=correlation_id(),
                          sp=pending.sp_name, customer=who, detail=detail)
    with b.store.transaction():
        if claim_at is not None:
            b.claim_request(pending, now=claim_at)
        audit_prepared(event)
        persist_session()
    return post_form_page(form)


def post_form_page(form: PostForm) -> Response:
    """The auto-submitting form to the ACS: no caching, scripts only by nonce, posts only to the ACS origin."""
    acs = urlsplit(form.action)
    g.issued_form = form  # what later steps (the console's exchange log) need, without re-reading the page
    resp = make_response(render_post_form(form, csp_nonce()))
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    resp.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{csp_nonce()}'; style-src 'nonce-{csp_nonce()}'; "
        f"form-action {acs.scheme}://{acs.netloc}; frame-ancestors 'none'; base-uri 'none'")
    return resp
