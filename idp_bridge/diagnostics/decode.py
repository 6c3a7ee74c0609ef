"""``idp-bridge decode``: read a captured SAMLRequest, SAMLResponse or bindRequest and show every check.

Input forms (all bounded by the SAML core's limits):

- a whole URL (``https://sso.example/saml/sso?SAMLRequest=…&SigAlg=…&Signature=…``): the query is
  read raw, so the Redirect signature is verified over the octets exactly as sent;
- a query or form body (``SAMLResponse=…&RelayState=…``, ``bindRequest=…&SigAlg=…&Signature=…``);
- an HTML page holding the auto-POST form (saved from the browser);
- a bare value (URL-encoded or not): DEFLATE+base64 (Redirect), base64 (POST) or base64 JSON (bindRequest);
- raw XML.

With a configuration the signatures are verified against configured metadata (the SP's for
requests and binding notifications, ours for Responses) and each check an IdP or SP runs is
listed with expected and actual values. Without one, the message is decoded and the checks that
need configuration are marked as not run.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from lxml import etree

from idp_bridge.diagnostics.report import Report
from idp_bridge.diagnostics.schema import PROTOCOL_XSD, schema_errors
from idp_bridge.errors import ANY_ERROR, AnyError, BridgeError
from idp_bridge.saml.bindings import DEFAULT_LIMITS, decode_redirect
from idp_bridge.saml.time import format_xs_datetime
from idp_bridge.saml.xml import NS_SAMLP, parse_untrusted, qname

if TYPE_CHECKING:
    from idp_bridge.idp.identity_provider import IdentityProvider
    from idp_bridge.idp.service_providers import LoadedServiceProvider

KINDS = ("AuthnRequest", "Response", "bindRequest")
_PARAM_RE = re.compile(r"(?:^|[?&])(SAMLRequest|SAMLResponse|bindRequest)=")
MAX_INPUT_CHARS = 2 * 1024 * 1024


class DecodeError(BridgeError):
    code = "decode_failed"
    status = 400


@dataclass
class Captured:
    """What the input held: the parameters (decoded values) and, for a query, the raw query string."""

    params: dict[str, str] = field(default_factory=dict)
    raw_query: str | None = None
    xml: bytes | None = None
    source: str = "value"


@dataclass
class Decoded:
    kind: str
    source: str
    pretty: str
    fields: dict[str, str]
    report: Report
    attributes: dict[str, list[str]] = field(default_factory=dict)
    #: For an AuthnRequest: the error code the bridge would refuse it with (None: accepted, or not judged).
    refusal: str | None = None

    def render(self) -> str:
        head = [f"{self.kind} (from {self.source})"]
        head += [f"  {k}: {v}" for k, v in self.fields.items()]
        if self.attributes:
            head.append("  attributes:")
            head += [f"    {k} = {', '.join(v)}" for k, v in self.attributes.items()]
        return "\n".join(head) + "\n\n" + self.pretty.rstrip() + "\n\n" + self.report.render()

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "source": self.source, "fields": self.fields, "decoded": self.pretty,
                "attributes": self.attributes, "checks": self.report.to_dict(), "refusal": self.refusal}


# --------------------------------------------------------------------------- reading the input


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.action: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        if tag in ("input", "textarea") and a.get("name"):
            self.fields.setdefault(a["name"] or "", a.get("value") or "")


def _b64_field(value: str) -> str:
    # A form body decodes '+' as space; base64 has no spaces, so a space can only have been '+'.
    return value.replace(" ", "+").strip()


def read_input(text: str) -> Captured:
    """Classify the input; never decodes the SAML itself."""
    text = text.strip().lstrip("\ufeff")
    if len(text) > MAX_INPUT_CHARS:
        raise DecodeError(f"input is {len(text)} characters; the limit is {MAX_INPUT_CHARS}", code="decode_too_large")
    if text.startswith("<"):
        low = text[:4096].lower()
        if "<form" in low or "<html" in low or "<input" in low or "<!doctype html" in low:
            parser = _FormParser()
            parser.feed(text)
            params = {k: v for k, v in parser.fields.items() if v}
            if not any(k in params for k in ("SAMLRequest", "SAMLResponse", "bindRequest")):
                raise DecodeError("the HTML holds no SAMLRequest, SAMLResponse or bindRequest field",
                                  code="decode_nothing")
            if parser.action:
                params.setdefault("_action", parser.action)
            return Captured(params=params, source="HTML form")
        return Captured(xml=text.encode("utf-8"), source="XML")
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if not parts.query:
            raise DecodeError(f"the URL {text[:120]!r} has no query string", code="decode_nothing")
        return _from_query(parts.query, source="URL query")
    if _PARAM_RE.search(text):
        return _from_query(text.lstrip("?"), source="query/form body")
    return Captured(params={"_value": text}, source="bare value")


def _from_query(query: str, *, source: str) -> Captured:
    params = {k: v for k, v in parse_qsl(query, keep_blank_values=True, max_num_fields=64)}
    return Captured(params=params, raw_query=query, source=source)


def _inflate(data: bytes) -> bytes | None:
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, DEFAULT_LIMITS.max_xml_bytes + 1)
    except zlib.error:
        return None
    if len(out) > DEFAULT_LIMITS.max_xml_bytes or not inflater.eof:
        return None
    return out


def _decode_value(value: str) -> tuple[str, bytes]:
    """A bare value: ('redirect'|'post'|'json', bytes)."""
    if "%" in value:
        value = unquote(value)
    value = _b64_field(value)
    if len(value) > DEFAULT_LIMITS.max_post_chars:
        raise DecodeError(f"value is {len(value)} characters; the limit is {DEFAULT_LIMITS.max_post_chars}",
                          code="decode_too_large")
    try:
        data = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"not base64 ({exc}); first 40 characters: {value[:40]!r}", code="decode_base64") from exc
    stripped = data.lstrip()
    if stripped.startswith(b"<"):
        return "post", data
    if stripped.startswith(b"{"):
        return "json", data
    inflated = _inflate(data)
    if inflated is not None:
        return "redirect", inflated
    raise DecodeError("the value decodes from base64 but is neither XML, JSON nor raw DEFLATE",
                      code="decode_unknown")


def _root_kind(xml: bytes) -> str:
    root = parse_untrusted(xml, what="SAML message", error=DecodeError)
    if root.tag == qname(NS_SAMLP, "AuthnRequest"):
        return "AuthnRequest"
    if root.tag == qname(NS_SAMLP, "Response"):
        return "Response"
    raise DecodeError(f"root element is {root.tag}; expected samlp:AuthnRequest or samlp:Response",
                      code="decode_unknown")


def pretty_xml(xml: bytes) -> str:
    root = parse_untrusted(xml, what="SAML message", error=DecodeError)
    etree.indent(root, space="  ")
    return str(etree.tostring(root, encoding="unicode"))


# --------------------------------------------------------------------------- decoding


def decode_message(text: str, *, bridge: IdentityProvider | None = None, sp_name: str | None = None,
                   request_id: str | None = None, now: dt.datetime | None = None) -> Decoded:
    """Decode and check one captured message. ``bridge`` (configured) enables signature and trust checks."""
    now = now or dt.datetime.now(dt.UTC)
    cap = read_input(text)
    fields = {k: v for k, v in cap.params.items() if k in ("RelayState", "SigAlg", "_action")}
    if "_action" in fields:
        fields["form action"] = fields.pop("_action")
    if cap.xml is not None:
        kind = _root_kind(cap.xml)
        if kind == "AuthnRequest":
            return _authn_request(cap.xml, None, cap, fields, bridge, now)
        return _response(cap.xml, cap, fields, bridge, sp_name, request_id, now)
    if "SAMLRequest" in cap.params:
        msg = None
        if cap.raw_query is not None:
            msg = decode_redirect(cap.raw_query)
            xml = msg.xml
        else:
            how, xml = _decode_value(cap.params["SAMLRequest"])
        return _authn_request(xml, msg, cap, fields, bridge, now)
    if "SAMLResponse" in cap.params:
        how, xml = _decode_value(cap.params["SAMLResponse"])
        return _response(xml, cap, fields, bridge, sp_name, request_id, now)
    if "bindRequest" in cap.params:
        return _bind_request(cap, fields, bridge)
    how, data = _decode_value(cap.params["_value"])
    if how == "json":
        cap.params["bindRequest"] = cap.params["_value"]
        return _bind_request(cap, fields, bridge)
    kind = _root_kind(data)
    if kind == "AuthnRequest":
        if how == "redirect":
            cap.raw_query = "SAMLRequest=" + cap.params["_value"]
            cap.params["SAMLRequest"] = cap.params["_value"]
        return _authn_request(data, None, cap, fields, bridge, now)
    return _response(data, cap, fields, bridge, sp_name, request_id, now)


def _iso(when: dt.datetime) -> str:
    return format_xs_datetime(when)


def _sp_for_issuer(bridge: IdentityProvider, issuer: str) -> LoadedServiceProvider | None:
    try:
        return bridge.sps.by_entity_id(issuer)
    except ANY_ERROR:
        return None


#: What to do when an AuthnRequest rule fails (the rules themselves live in saml/requests.py).
_REQUEST_FIXES = {
    "issuer": "add the SP with `idp-bridge sp add` (metadata of this Issuer), or check the SP metadata's entityID; "
              "the Issuer is compared exactly (no whitespace, comments or child elements)",
    "signature": "the SP signs with a key the configured SP metadata does not hold: refresh the SP metadata (key "
                 "rotated at the SP), or the query was re-encoded on the way — capture the URL exactly as the "
                 "browser requested it (the signature travels in the query: SigAlg and Signature)",
    "destination": "the SP has another SSO URL for us: upload our current metadata in Partner Center, or set "
                   "bridge.base_url to the address in the uploaded metadata (a signed request must name it)",
    "protocol_binding": "only HTTP-POST responses are supported",
    "issue_instant": "a captured old request is expected to fail this (decode it with --at TIME); live, synchronise "
                     "the clocks (NTP)",
    "acs": "the request names an ACS the SP metadata does not list (or not with HTTP-POST): refresh the SP metadata",
    "name_id_policy": "we issue transient NameIDs qualified by the SP's entity ID; the SP asks for another kind "
                      "(the bridge answers it with a signed InvalidNameIDPolicy Response)",
}
#: A request without its query signature is a capture problem, not a key problem.
_MISSING_SIGNATURE_FIX = ("decode the whole URL the browser requested (SAMLRequest with its SigAlg and Signature), "
                          "not the SAMLRequest value alone")
_NEEDS_CONFIG = ("issuer", "signature", "destination", "acs", "name_id_policy")


def _authn_request(xml: bytes, msg: object, cap: Captured, fields: dict[str, str], bridge: IdentityProvider | None,
                   now: dt.datetime) -> Decoded:
    from idp_bridge.errors import StatusResponseError
    from idp_bridge.saml.bindings import RedirectMessage
    from idp_bridge.saml.checks import NOT_CHECKED
    from idp_bridge.saml.requests import judge_authn_request, parse_authn_request

    report = Report("IdP checks (what the bridge verifies before answering: the same rules, in the same order)")
    g = "AuthnRequest"
    pretty = pretty_xml(xml)
    try:
        req = parse_authn_request(xml)
    except ANY_ERROR as exc:
        report.add(g, "structure", False, exc.operator, "the SP sent a malformed AuthnRequest")
        report.add(g, "verdict", False, f"refused [{exc.code}]: {exc.operator}", "see the failed checks above")
        return Decoded("AuthnRequest", cap.source, pretty, fields, report, refusal=exc.code)
    report.add(g, "structure", True, f"ID {req.id}, Issuer {req.issuer}")
    errors = schema_errors(xml, schema=PROTOCOL_XSD)
    report.add(g, "schema-valid", not errors, "valid against the SAML 2.0 protocol schema" if not errors
               else "; ".join(errors), "the SP's AuthnRequest is not schema-valid")
    fields.update({"ID": req.id, "Issuer": req.issuer, "IssueInstant": _iso(req.issue_instant),
                   "ACS URL": req.acs_url or "(none)", "Destination": req.destination or "(none)"})
    redirect = msg if isinstance(msg, RedirectMessage) else None
    if redirect is None and cap.raw_query is not None:
        try:
            redirect = decode_redirect(cap.raw_query)
        except ANY_ERROR:
            redirect = None
    if redirect is not None and redirect.sig_alg is not None:
        fields["SigAlg"] = redirect.sig_alg
    sp = _sp_for_issuer(bridge, req.issuer) if bridge is not None else None
    skew = dt.timedelta(seconds=bridge.config.saml.clock_skew_seconds) if bridge is not None else \
        dt.timedelta(minutes=3)
    verdict = judge_authn_request(
        req, sp=sp.metadata if sp is not None else None, sso_urls=[bridge.config.sso_url] if bridge else [],
        now=now, skew=skew, redirect=redirect,
        known_entity_ids=[s.metadata.entity_id for s in _loaded_sps(bridge)] if bridge else ())
    for c in verdict.checks:
        if bridge is None and c.name in _NEEDS_CONFIG:
            report.skip(g, c.name, "no configuration: pass --config to check against configured metadata")
        elif c.actual.startswith(NOT_CHECKED):
            report.skip(g, c.name, c.actual)
        else:
            detail = c.actual if c.ok else c.detail
            if c.name == "signature" and c.code == "signature_missing":
                detail = "no SigAlg/Signature in the input" + ("" if cap.raw_query else
                                                               " (a bare value cannot carry the query signature)")
            fix = _MISSING_SIGNATURE_FIX if c.code == "signature_missing" else _REQUEST_FIXES[c.name]
            report.add(g, c.name, c.ok, detail, fix, expected=c.expected, actual=c.actual)
    report.skip(g, "ID not seen before", "decode never consumes the ID; the bridge accepts each ID once")
    refusal: str | None = None
    if bridge is None:
        report.skip(g, "verdict", "no configuration: pass --config to check against configured metadata")
    else:
        try:
            accepted = verdict.accept()
            report.add(g, "verdict", True, f"accepted; the Response would go to {accepted.acs_url}")
        except StatusResponseError as exc:
            refusal = exc.code
            report.add(g, "verdict", False, f"refused [{exc.code}]: answered with a signed Response "
                       f"(status {exc.sub_status}) to {exc.acs_url}: {exc.operator}", "see the failed checks above")
        except ANY_ERROR as exc:
            refusal = exc.code
            report.add(g, "verdict", False, f"refused [{exc.code}]: {exc.operator}", "see the failed checks above")
    return Decoded("AuthnRequest", cap.source, pretty, fields, report, refusal=refusal)


def _loaded_sps(bridge: IdentityProvider) -> list[LoadedServiceProvider]:
    loaded = []
    for sp in bridge.config.service_providers:
        try:
            loaded.append(bridge.sps.get(sp.name))
        except ANY_ERROR:
            continue
    return loaded


_RESPONSE_FIXES = {
    "response_destination": "the Response goes to the ACS in the SP metadata; refresh the SP metadata",
    "audience": "the audience is the SP entity ID from its metadata; refresh the SP metadata",
    "assertion_signature": "the SP verifies with the certificate in OUR uploaded metadata: export and upload "
                           "the current metadata (`idp-bridge metadata export`)",
    "response_issuer": "the Issuer must equal the entityID of the metadata uploaded in Partner Center",
    "assertion_issuer": "the Issuer must equal the entityID of the metadata uploaded in Partner Center",
}


def _response(xml: bytes, cap: Captured, fields: dict[str, str], bridge: IdentityProvider | None, sp_name: str | None,
              request_id: str | None, now: dt.datetime) -> Decoded:
    from idp_bridge.saml.response_checks import check_response, parse_idp_metadata

    pretty = pretty_xml(xml)
    report = Report("SP checks (what Huawei IAM verifies in our Response)")
    root = parse_untrusted(xml, what="SAML Response", error=DecodeError)
    destination = root.get("Destination") or ""
    fields.update({"ID": root.get("ID") or "", "InResponseTo": root.get("InResponseTo") or "(none)",
                   "Destination": destination or "(none)"})
    errors = schema_errors(xml, schema=PROTOCOL_XSD)
    report.add("Response", "schema-valid", not errors, "valid against the SAML 2.0 protocol schema" if not errors
               else "; ".join(errors), "a bridge bug if the bridge built it: report it with this output")
    if bridge is None:
        report.skip("Response", "SP checks", "no configuration: pass --config so the signature can be checked "
                    "against our metadata and the SP's entity ID and ACS")
        return Decoded("Response", cap.source, pretty, fields, report)
    sp = _pick_sp(bridge, destination, sp_name)
    acs = destination if destination in sp.metadata.acs_locations else sp.metadata.default_acs().location
    idp = parse_idp_metadata(bridge.metadata().xml)
    result = check_response(xml, idp=idp, sp_entity_id=sp.metadata.entity_id, acs_url=acs,
                            expected_request_ids={request_id} if request_id else None, now=now,
                            skew=dt.timedelta(seconds=bridge.config.saml.clock_skew_seconds))
    fields["checked as SP"] = f"{sp.name} ({sp.metadata.entity_id}), ACS {acs}"
    if not request_id:
        fields["InResponseTo check"] = "not run: pass --request-id ID (the AuthnRequest ID) to check it"
    for c in result.checks:
        report.add("SP checks", c.name, c.ok, c.actual if c.ok else f"expected {c.expected}",
                   _RESPONSE_FIXES.get(c.name, "compare expected and actual above"), expected=c.expected,
                   actual=c.actual)
    return Decoded("Response", cap.source, pretty, fields, report, attributes=dict(result.attributes))


def _pick_sp(bridge: IdentityProvider, destination: str, sp_name: str | None) -> LoadedServiceProvider:
    if sp_name:
        return bridge.sps.get(sp_name)
    for sp in bridge.config.service_providers:
        try:
            loaded = bridge.sps.get(sp.name)
        except ANY_ERROR:
            continue
        if destination in loaded.metadata.acs_locations:
            return loaded
    return bridge.sps.default()


def _bind_request(cap: Captured, fields: dict[str, str], bridge: IdentityProvider | None) -> Decoded:
    from idp_bridge.huawei.binding import verify_bind_notification
    from idp_bridge.saml.algorithms import fingerprint

    value = _b64_field(cap.params["bindRequest"])
    cap.params["bindRequest"] = value
    if "Signature" in cap.params:
        cap.params["Signature"] = _b64_field(cap.params["Signature"])
    report = Report("Partner-side checks (what the bridge verifies in a binding notification)")
    g = "bindRequest"
    try:
        payload = json.loads(base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8"))
        pretty = json.dumps(payload, indent=2, ensure_ascii=False)
        report.add(g, "base64 JSON", True, f"{len(value)} base64 characters")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        report.add(g, "base64 JSON", False, str(exc), "bindRequest must be base64 of a UTF-8 JSON object")
        return Decoded("bindRequest", cap.source, value[:200], fields, report)
    if bridge is None or "Signature" not in cap.params:
        report.skip(g, "signature", "no configuration" if bridge is None else
                    "no Signature in the input: decode the whole form (bindRequest, SigAlg, Signature)")
        return Decoded("bindRequest", cap.source, pretty, fields, report)
    certs: list[tuple[str, Sequence[object]]] = []
    last: AnyError | None = None
    for sp_cfg in bridge.config.service_providers:
        try:
            sp = bridge.sps.get(sp_cfg.name)
        except ANY_ERROR:
            continue
        certs.append((sp.name, sp.metadata.signing_certificates))
        try:
            note = verify_bind_notification(cap.params, sp.metadata.signing_certificates)
        except ANY_ERROR as exc:
            last = exc
            continue
        report.add(g, "signature", True, f"verified with SP {sp.name}'s certificate {fingerprint(note.certificate)} "
                   f"over the {note.signed_octets} octets")
        report.add(g, "xUserId", True, note.x_user_id)
        report.add(g, "bindAction", True, f"{note.bind_action} ({'bind' if note.bound else 'unbind'})")
        report.add(g, "domainId", True, note.domain_id or "(none)")
        return Decoded("bindRequest", cap.source, pretty, fields, report)
    tried = ", ".join(n for n, _ in certs) or "none loaded"
    report.add(g, "signature or content", False, last.operator if last else "no SP metadata loaded",
               "a forged notification, or the SP metadata is stale (Huawei rotated its key): refresh it",
               expected=f"signed by a configured SP ({tried})", actual=last.code if last else "no SP")
    return Decoded("bindRequest", cap.source, pretty, fields, report)
