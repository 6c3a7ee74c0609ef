"""Recent SAML exchanges, decoded for the debug console: a bounded ring in the database, so the
console shows what every worker and node saw.

Only filled while the debug console is enabled. Secrets never enter it: signature values and
certificates are cut to a marker, the hand-off token and passwords are never read, and a
binding notification's Signature is dropped. Rejection reasons come from the audit trail (shared
by every worker), joined by correlation id when the console renders.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass, field

from lxml import etree

from idp_bridge.errors import ANY_ERROR
from idp_bridge.saml.bindings import decode_post, decode_redirect
from idp_bridge.saml.xml import NS_DS, NS_SAML, parse_untrusted
from idp_bridge.store import Store

REDACTED = "[redacted]"


@dataclass(frozen=True)
class Exchange:
    at: dt.datetime
    kind: str  # AuthnRequest, Response, bindRequest, return
    path: str
    status: int
    correlation_id: str
    summary: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, list[str]] = field(default_factory=dict)
    decoded: str = ""  # pretty XML or JSON, secrets redacted
    error: str = ""

    @property
    def refused(self) -> bool:
        return self.status >= 400


class ExchangeLog:
    """The newest ``size`` exchanges, kept in the store (shared by every worker)."""

    def __init__(self, store: Store, size: int = 100) -> None:
        self._store = store
        self._size = size

    def add(self, exchange: Exchange) -> None:
        self._store.exchanges.record(at=exchange.at, kind=exchange.kind, path=exchange.path, status=exchange.status,
                                    correlation_id=exchange.correlation_id, summary=dict(exchange.summary),
                                    attributes=dict(exchange.attributes), decoded=exchange.decoded,
                                    error=exchange.error, keep=self._size)

    def recent(self) -> list[Exchange]:
        return [Exchange(**row) for row in self._store.exchanges.recent(limit=self._size)]


def redacted_xml(xml: bytes) -> str:
    """Pretty XML with ds:SignatureValue and ds:X509Certificate contents replaced by a marker."""
    root = parse_untrusted(xml, what="SAML message")
    for tag in ("SignatureValue", "X509Certificate"):
        for el in root.iter(f"{{{NS_DS}}}{tag}"):
            el.text = f"{REDACTED} ({len((el.text or '').strip())} characters)"
    etree.indent(root, space="  ")
    return str(etree.tostring(root, encoding="unicode"))


def _attributes(root: etree._Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for attr in root.iter(f"{{{NS_SAML}}}Attribute"):
        out[attr.get("Name") or "?"] = [(v.text or "") for v in attr.iter(f"{{{NS_SAML}}}AttributeValue")]
    return out


def _text(root: etree._Element, local: str) -> str:
    el = next(root.iter(f"{{{NS_SAML}}}{local}"), None)
    return "" if el is None else (el.text or "").strip()


def authn_request_exchange(raw_query: str, *, path: str, status: int, correlation_id: str,
                           now: dt.datetime) -> Exchange:
    try:
        msg = decode_redirect(raw_query)
        root = parse_untrusted(msg.xml, what="AuthnRequest")
        summary = {"ID": root.get("ID") or "", "Issuer": _text(root, "Issuer"),
                   "ACS": root.get("AssertionConsumerServiceURL") or "", "Destination": root.get("Destination") or "",
                   "SigAlg": msg.sig_alg or "(unsigned)", "RelayState": "present" if msg.relay_state else "absent"}
        return Exchange(now, "AuthnRequest", path, status, correlation_id, summary, {}, redacted_xml(msg.xml))
    except ANY_ERROR as exc:
        return Exchange(now, "AuthnRequest", path, status, correlation_id, error=exc.operator)


def response_exchange(saml_response: str, *, action: str, path: str, status: int, correlation_id: str,
                      now: dt.datetime) -> Exchange:
    try:
        xml = decode_post(saml_response)
        root = parse_untrusted(xml, what="SAML Response")
        audience = _text(root, "Audience")
        summary = {"ID": root.get("ID") or "", "InResponseTo": root.get("InResponseTo") or "",
                   "Destination": root.get("Destination") or action, "Audience": audience,
                   "Issuer": _text(root, "Issuer"), "NameID": REDACTED}
        return Exchange(now, "Response", path, status, correlation_id, summary, _attributes(root), redacted_xml(xml))
    except ANY_ERROR as exc:
        return Exchange(now, "Response", path, status, correlation_id, error=exc.operator)


def bind_exchange(bind_request: str, sig_alg: str, *, path: str, status: int, correlation_id: str,
                  now: dt.datetime) -> Exchange:
    try:
        value = bind_request.strip()
        payload = json.loads(base64.b64decode(value + "=" * (-len(value) % 4), validate=True))
        decoded = json.dumps(payload, indent=2, ensure_ascii=False)
        summary = {"SigAlg": sig_alg, "Signature": REDACTED}
        if isinstance(payload, dict):
            summary.update({k: str(payload.get(k)) for k in ("xUserId", "domainId", "bindAction") if k in payload})
        return Exchange(now, "bindRequest", path, status, correlation_id, summary, {}, decoded)
    except (binascii.Error, ValueError) as exc:
        return Exchange(now, "bindRequest", path, status, correlation_id, error=f"bindRequest unreadable: {exc}")


def return_exchange(params: list[tuple[str, str]], location: str, *, path: str, status: int, correlation_id: str,
                    now: dt.datetime) -> Exchange:
    """Huawei's return after checkout/top-up: the untrusted query as received and where the bridge sent it."""
    summary = {name[:64]: value[:256] for name, value in params[:20]}
    summary["→ sent to"] = location[:512] or "(no redirect)"
    return Exchange(now, "return", path, status, correlation_id, summary)
