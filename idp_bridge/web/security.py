"""Per-request correlation id, CSP nonce, CSRF tokens and security headers."""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, Response, g, request, session

from idp_bridge.errors import RequestError


def correlation_id() -> str:
    cid: str | None = g.get("correlation_id")
    if cid is None:
        cid = g.correlation_id = secrets.token_hex(8)
    return cid


def csp_nonce() -> str:
    nonce: str | None = g.get("csp_nonce")
    if nonce is None:
        nonce = g.csp_nonce = secrets.token_urlsafe(16)
    return nonce


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf() -> None:
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf") or ""
    if not sent or not expected or not hmac.compare_digest(str(sent), str(expected)):
        raise RequestError("the form's CSRF token is missing or does not match this session "
                           "(an expired session, or a forged cross-site post)", code="csrf_failed")


def safe_next(target: str | None) -> str | None:
    """Only our own absolute paths: '/x', never '//host', '/\\host' or a scheme."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ch in target for ch in "\\\r\n\t") or len(target) > 4096:
        return None
    return target


_DEFAULT_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"))
_PAGE_CSP = ("default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; img-src 'self' data:; "
             "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
#: A response that put no nonce in its body has no inline script or style to allow.
_NO_INLINE_CSP = ("default-src 'none'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
                  "base-uri 'none'")


def install(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        correlation_id()

    @app.after_request
    def _headers(resp: Response) -> Response:
        headers = resp.headers
        present = {name.lower() for name, _value in headers.items()}  # one pass, not a scan per setdefault
        for name, value in _DEFAULT_HEADERS:
            if name.lower() not in present:
                headers.add(name, value)
        if "x-correlation-id" not in present:
            headers.add("X-Correlation-Id", correlation_id())
        if "content-security-policy" not in present:
            nonce = g.get("csp_nonce")  # only a page that used a nonce needs one in its policy
            headers.add("Content-Security-Policy", _PAGE_CSP.format(nonce=nonce) if nonce else _NO_INLINE_CSP)
        if "cache-control" not in present and resp.mimetype == "text/html":
            headers.add("Cache-Control", "no-store")
        return resp

    app.jinja_env.globals.update(csrf_token=csrf_token, csp_nonce=csp_nonce, correlation_id=correlation_id)
