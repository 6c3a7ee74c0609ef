"""The edge check: every value from outside is checked here, before any view runs, for every blueprint.

Rule: a request whose query parameters, form fields, client address (X-Forwarded-For when trusted), headers
(Host, User-Agent, our session cookie) or body break these bounds is refused with 400 and one ``InputError``
naming the value, what was expected and what arrived; no view, store or parser ever sees it. Every
parameter and field: no control characters
(C0, DEL, C1; so no NUL, which PostgreSQL refuses) and no lone surrogates, at most ``GENERIC.max_length``
characters, at most ``MAX_FIELDS`` values. Fields a view reads have their own rule (``FIELDS``): IDs and
names a bounded length of allowed characters, base64 a base64 alphabet. The binding notice's
``bindRequest`` and a hand-off JWT's header and claims are decoded here too, as bounded JSON (depth, nodes,
sizes; finite numbers; clean strings) before any library parses them.
Messages quote values with ``repr`` and cut them short, so a refusal can be logged and audited safely.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from flask import Flask, Request, request
from werkzeug.exceptions import HTTPException

from idp_bridge.saml.errors import RequestError
from idp_bridge.web.sessions import COOKIE_NAME

MAX_FIELDS = 64
MAX_JSON_DEPTH = 8
MAX_JSON_NODES = 512
MAX_JSON_STRING = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Header values arrive latin-1 decoded: UTF-8 sent in a header shows up as 0x80-0x9F, so only C0 and DEL there.
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
MAX_HEADERS = 100
MAX_HEADER_LENGTH = 8190  # gunicorn's limit_request_field_size, for the development server too


class InputError(RequestError):
    """A value from outside is malformed or out of bounds (refused at the edge)."""

    code = "input_invalid"
    status = 400


@dataclass(frozen=True)
class Rule:
    max_length: int
    allowed: re.Pattern[str] | None = None
    expected: str = "text without control characters"


def _rule(max_length: int, chars: str, expected: str) -> Rule:
    return Rule(max_length, re.compile(f"[{chars}]*"), expected)


GENERIC = Rule(8192)
NAME = Rule(64, re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"), "a name of letters, digits, '.', '_' or '-'")
TOKEN = _rule(128, r"A-Za-z0-9_\-", "a URL-safe token")
JWT = _rule(8192, r"A-Za-z0-9_\-.=", "a JWT (base64url parts joined by '.')")
SIG_ALG = _rule(256, r"A-Za-z0-9:/.#_\-", "an algorithm URI")
SP = Rule(64, None, "an SP name")  # loose: an unknown name is refused by the registry, which lists the known ones
USER_ID = Rule(128, None, "a user ID of at most 128 characters")
PASSWORD = Rule(1024, None, "a password of at most 1024 characters")


def _base64(max_length: int) -> Rule:
    # ' ' too: an unencoded '+' in a query string arrives as a space; the decoders judge the rest.
    return _rule(max_length, r"A-Za-z0-9+/=_\- \r\n", "base64 text")


#: endpoint -> field -> rule; other fields get GENERIC. A STRICT endpoint takes only its listed fields (any
#: other name: 400): the public pages whose inputs are settled. The rest take extra, checked fields
#: (Huawei's pass-through return parameters, SAML and Huawei messages that may grow optional fields, the
#: operator console's filters).
STRICT = frozenset({"account.home", "account.login", "account.logout", "saml.sso_continue", "saml.metadata",
                    "health.healthz"})
FIELDS: dict[str, dict[str, Rule]] = {
    "account.home": {}, "saml.sso_continue": {}, "health.healthz": {},
    "saml.metadata": {"sp": SP},
    "saml.sso": {"SAMLRequest": _base64(16 * 1024), "Signature": _base64(2048), "SigAlg": SIG_ALG,
                 "RelayState": Rule(1024)},
    "account.login": {"user_id": USER_ID, "password": PASSWORD, "csrf_token": TOKEN},
    "account.logout": {"csrf_token": TOKEN},
    "jump.go": {"sp": SP, "service": Rule(2048, re.compile(r"[!-~]*"), "a URL (printable ASCII, no spaces)"),
                "token": JWT},
    "handoff.handoff": {"token": JWT, "next": Rule(2048, re.compile(r"[!-~]*"), "one of our paths")},
    "handoff.confirm": {"nonce": TOKEN, "choice": NAME, "csrf_token": TOKEN},
    "i18n.choose": {"next": Rule(2048, re.compile(r"[!-~]*"), "one of our paths")},
    "huawei.bind": {"bindRequest": _rule(16 * 1024, r"A-Za-z0-9+/=", "standard base64"),
                    "Signature": _base64(2048), "SigAlg": SIG_ALG},
    "debug.login": {"password": PASSWORD, "csrf_token": TOKEN},
    "debug.logout": {"csrf_token": TOKEN},
    "debug.preview": {"user_id": USER_ID, "sp": SP, "csrf_token": TOKEN},
    "devtools_console.test_login": {"user_id": USER_ID, "site": NAME, "csrf_token": TOKEN},
}
HOST = Rule(255, re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"), "a host[:port]")


def _show(value: str) -> str:
    return repr(value[:40]) + ("…" if len(value) > 40 else "")


def check_value(where: str, value: str, rule: Rule) -> None:
    """Raise InputError unless ``value`` fits ``rule`` (``where`` names it in the message)."""
    if len(value) > rule.max_length:
        raise InputError(f"{where}: {len(value)} characters; expected {rule.expected}, at most {rule.max_length}",
                         code="input_too_long")
    bad = _CONTROL.search(value)
    if bad:
        raise InputError(f"{where}: control character U+{ord(bad.group()):04X} at position {bad.start()} in "
                         f"{_show(value)}; expected {rule.expected}", code="input_control_character")
    if rule.allowed is not None and not rule.allowed.fullmatch(value):
        raise InputError(f"{where}: {_show(value)} is not {rule.expected}", code="input_malformed")


def _check_fields(kind: str, items: Iterable[tuple[str, str]], rules: dict[str, Rule], *, strict: bool) -> None:
    for count, (name, value) in enumerate(items, start=1):
        if count > MAX_FIELDS:
            raise InputError(f"more than {MAX_FIELDS} {kind}s; expected a handful", code="input_too_many")
        check_value(f"{kind} name", name, Rule(64))
        if strict and name not in rules:
            raise InputError(f"unexpected {kind} {_show(name)}; this URL takes "
                             f"{', '.join(sorted(rules)) or 'none'}", code="input_unexpected")
        check_value(f"{kind} {name}", value, rules.get(name, GENERIC))


@lru_cache(maxsize=1024)
def _is_ip_address(text: str) -> bool:
    """The few client addresses a bridge sees (its proxy, mostly) are parsed once each."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_BODY_HEADER_KEYS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})


def _header_values(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """(WSGI key, value) of every request header: what ``request.headers`` iterates (werkzeug's EnvironHeaders),
    without making a header name for each."""
    return [(key, value) for key, value in environ.items()
            if (key.startswith("HTTP_") and key not in _BODY_HEADER_KEYS)
            or (key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value)]


def check_client(req: Request) -> None:
    """The client address (set by ProxyFix from X-Forwarded-For when trusted), Host and User-Agent."""
    addr = req.remote_addr
    if addr and (len(addr) > 64 or not _is_ip_address(addr)):  # the longest IPv6 text is 45 characters
        raise InputError(f"client address {_show(addr)} (X-Forwarded-For, when trusted) is not an IP address",
                         code="input_client_address")
    headers = _header_values(req.environ)
    if len(headers) > MAX_HEADERS:
        raise InputError(f"{len(headers)} headers; expected at most {MAX_HEADERS}", code="input_too_many")
    for key, value in headers:
        bad = _HEADER_CONTROL.search(value)
        if len(value) > MAX_HEADER_LENGTH or bad:
            name = key.removeprefix("HTTP_").replace("_", "-").title()
            raise InputError(f"{name} header: {len(value)} characters"
                             + (f", control character U+{ord(bad.group()):04X}" if bad else "")
                             + f"; expected at most {MAX_HEADER_LENGTH} without control characters",
                             code="input_header")
    check_value("Host header", req.host, HOST)
    user_agent = req.environ.get("HTTP_USER_AGENT", "")
    if len(user_agent) > 512:  # stored with each metadata fetch
        raise InputError(f"User-Agent header: {len(user_agent)} characters; expected at most 512",
                         code="input_too_long")
    cookie = req.cookies.get(COOKIE_NAME)
    if cookie is not None:  # ours is a URL-safe random token; anything else was not set by us
        check_value(f"cookie {COOKIE_NAME}", cookie, TOKEN)


def check_request(req: Request) -> None:
    """The whole edge check for one request; raises InputError."""
    check_client(req)
    endpoint = req.endpoint or ""
    rules = FIELDS.get(endpoint, {})
    strict = endpoint in STRICT
    _check_fields("query parameter", req.args.items(multi=True), rules, strict=strict)
    if req.method == "POST":
        try:
            form, files = req.form, req.files
        except HTTPException:  # 413 and the like: already a 4xx
            raise
        except Exception as exc:  # noqa: BLE001 - the server's body reader (bad chunking, cut-off body, ...)
            raise InputError(f"the request body could not be read: {type(exc).__name__}: {str(exc)[:120]!r}",
                             code="input_body") from None
        if files:
            raise InputError("the request carries file uploads; no endpoint takes files", code="input_file")
        _check_fields("form field", form.items(multi=True), rules, strict=strict)
    if req.endpoint == "huawei.bind" and req.form.get("bindRequest"):
        check_bind_request(req.form["bindRequest"])
    if req.endpoint in ("jump.go", "handoff.handoff") and req.args.get("token"):
        check_jwt_json(req.args["token"])


# --------------------------------------------------------------------------- the binding notice's JSON


def check_bind_request(value: str) -> Any:
    """``bindRequest`` is base64 of a small JSON object: bounded depth, node count, strings and numbers."""
    try:
        raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise InputError("form field bindRequest is not base64 of UTF-8 text", code="input_json") from None
    return bounded_json(text, "form field bindRequest")


def check_jwt_json(token: str) -> None:
    """A JWT's header and claims are JSON too (the JWT library parses the header before any signature check)."""
    for name, part in zip(("header", "claims"), token.split(".")[:2], strict=False):
        try:
            text = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("utf-8")
        except (binascii.Error, ValueError):
            raise InputError(f"query parameter token: the JWT {name} is not base64url of UTF-8 text",
                             code="input_jwt") from None
        bounded_json(text, f"query parameter token (JWT {name})")


def _json_depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _small_int(text: str) -> int:
    if len(text) > 30:
        raise ValueError(f"a {len(text)}-digit number")
    return int(text)


def bounded_json(text: str, where: str) -> Any:
    """Parse JSON from outside: depth <= MAX_JSON_DEPTH, nodes <= MAX_JSON_NODES, clean bounded strings."""
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"{where}: JSON nested {depth} deep; expected at most {MAX_JSON_DEPTH}",
                         code="input_json")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_small_int)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{where}: not valid JSON ({str(exc)[:120]})", code="input_json") from None
    nodes = [0]

    def walk(node: Any, path: str) -> None:
        nodes[0] += 1
        if nodes[0] > MAX_JSON_NODES:
            raise InputError(f"{where}: more than {MAX_JSON_NODES} JSON values", code="input_json")
        if isinstance(node, str):
            check_value(f"{where} {path}", node, Rule(MAX_JSON_STRING))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
        elif isinstance(node, dict):
            for key, item in node.items():
                check_value(f"{where} key in {path}", key, Rule(64))
                walk(item, f"{path}.{key}")

    walk(value, "$")
    return value


def install(app: Flask) -> None:
    @app.before_request
    def _edge_check() -> None:
        check_request(request)
