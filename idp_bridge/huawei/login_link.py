"""The console jump: Huawei's `/authui/saml/login` link (shared spec §2 step 1)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, urlsplit

from idp_bridge.errors import RequestError


def encode_uri_component(value: str) -> str:
    """Percent-encode exactly like JavaScript's ``encodeURIComponent`` (Huawei's documented rule)."""
    return quote(value, safe="-_.!~*'()")


def check_service_url(service: str, allowed_hosts: Sequence[str]) -> str:
    """Return ``service`` if it is an https URL on one of ``allowed_hosts``; else RequestError (400)."""
    if len(service) > 2048:
        raise RequestError(f"service URL is {len(service)} characters; the limit is 2048",
                           code="service_too_long")
    if any(ch in service for ch in "\\\r\n\t ") or any(ord(ch) < 0x20 for ch in service):
        raise RequestError(f"service URL {service!r} contains a backslash, space or control character",
                           code="service_not_allowed")
    parts = urlsplit(service)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host or parts.username or parts.password or "@" in parts.netloc:
        raise RequestError(f"service URL {service!r} must be an absolute https URL with no user info; "
                           f"allowed hosts: {', '.join(allowed_hosts)}", code="service_not_allowed")
    # The console is https on its default port: any other port (or a malformed one) names another service.
    if parts.netloc.lower() not in (host, host + ":443"):
        raise RequestError(f"service URL {service!r} names port {parts.netloc.rpartition(':')[2]!r}; "
                           f"the console hosts ({', '.join(allowed_hosts)}) are served on 443 only",
                           code="service_not_allowed")
    if host not in {h.lower() for h in allowed_hosts}:
        raise RequestError(f"service URL host {host!r} is not among this SP's console hosts "
                           f"({', '.join(allowed_hosts)})", code="service_not_allowed")
    return service


def console_login_url(*, login_url: str, x_account_type: str, first_login: bool, service: str) -> str:
    """``<IAM login host>/authui/saml/login?xAccountType=…&isFirstLogin=…&service=…``."""
    return (f"{login_url}?xAccountType={encode_uri_component(x_account_type)}"
            f"&isFirstLogin={'true' if first_login else 'false'}"
            f"&service={encode_uri_component(service)}")
