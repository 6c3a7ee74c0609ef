"""AuthnRequest: parse what Huawei IAM sends, judge it against the SP's metadata, build one (simulator).

Rule: every AuthnRequest rule is written once, here. Parsing is structural (and strict where SAML is:
the Issuer is compared exactly, never trimmed, and may hold nothing but text). :func:`judge_authn_request`
records every trust rule as a :class:`~idp_bridge.saml.checks.Check` (Issuer, query signature,
Destination, ProtocolBinding, IssueInstant, ACS from metadata, NameIDPolicy); the live path raises the
typed error of the first failed one (:meth:`RequestVerdict.accept`), ``decode`` shows them all. Replay
(seen IDs) is the caller's job with the database.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from lxml import etree

from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.bindings import RedirectMessage, verify_redirect_signature
from idp_bridge.saml.checks import Checks
from idp_bridge.saml.errors import MetadataError, RequestError, SignatureError, StatusResponseError
from idp_bridge.saml.metadata import ServiceProviderMetadata, parse_xs_boolean
from idp_bridge.saml.time import format_xs_datetime, parse_xs_datetime
from idp_bridge.saml.xml import (
    BINDING_POST,
    NAMEID_TRANSIENT,
    NS_DS,
    NS_SAML,
    NS_SAMLP,
    STATUS_INVALID_NAMEID_POLICY,
    parse_untrusted,
    qname,
)

NAMEID_ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"
_REQUEST_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,255}")


@dataclass(frozen=True)
class AuthnRequest:
    id: str
    issuer: str
    issue_instant: datetime
    destination: str | None
    acs_url: str | None
    acs_index: int | None
    protocol_binding: str | None
    force_authn: bool
    is_passive: bool
    name_id_format: str | None
    sp_name_qualifier: str | None
    allow_create: bool | None
    version: str
    has_name_id_policy: bool = False


@dataclass(frozen=True)
class AcceptedRequest:
    request: AuthnRequest
    #: Where the Response goes: always a location taken from the SP's metadata.
    acs_url: str
    sp_entity_id: str


def _bool_attr(el: etree._Element, name: str, default: bool) -> bool:
    try:
        return parse_xs_boolean(el.get(name), default)
    except ValueError as exc:
        raise RequestError(f"AuthnRequest attribute {name}: {exc}", code="request_malformed") from exc


def parse_authn_request(xml: bytes) -> AuthnRequest:
    """Parse an AuthnRequest a peer sent (already inflated/decoded). Structural checks only."""
    root = parse_untrusted(xml, what="AuthnRequest")
    if root.tag != qname(NS_SAMLP, "AuthnRequest"):
        raise RequestError(f"message root is {root.tag}; expected {{{NS_SAMLP}}}AuthnRequest",
                           code="not_authn_request")
    if next(root.iter(qname(NS_DS, "Signature")), None) is not None:
        raise RequestError("AuthnRequest carries an embedded ds:Signature; only the HTTP-Redirect query "
                           "signature is accepted", code="embedded_signature_refused")
    version = root.get("Version")
    if version != "2.0":
        raise RequestError(f"AuthnRequest Version is {version!r}; expected '2.0'", code="unsupported_version")
    request_id = (root.get("ID") or "").strip()
    if not request_id:
        raise RequestError("AuthnRequest has no ID", code="request_id_missing")
    if not _REQUEST_ID.fullmatch(request_id):  # it is stored (replay) and echoed (InResponseTo): bounded
        raise RequestError(f"AuthnRequest ID {request_id[:40]!r}… ({len(request_id)} characters) is not an "
                           "xs:ID of at most 256 ASCII letters, digits, '_', '-', '.'", code="request_id_invalid")

    instant_text = root.get("IssueInstant")
    if instant_text is None:
        raise RequestError(f"AuthnRequest {request_id} has no IssueInstant", code="request_malformed")
    try:
        issue_instant = parse_xs_datetime(instant_text)
    except ValueError as exc:
        raise RequestError(f"AuthnRequest {request_id}: IssueInstant {instant_text!r} is not an xs:dateTime",
                           code="request_malformed") from exc

    issuers = root.findall(qname(NS_SAML, "Issuer"))
    if len(issuers) == 1 and len(issuers[0]):
        # A comment or PI splits the text: ".text" would stop at it (``https://sp/<!---->.evil``).
        kinds = sorted({"element" if isinstance(c.tag, str) else type(c).__name__.lstrip("_") for c in issuers[0]})
        raise RequestError(f"AuthnRequest {request_id} saml:Issuer holds {len(issuers[0])} child node(s) "
                           f"({', '.join(kinds)}); an Issuer is plain text, compared exactly",
                           code="issuer_malformed")
    # Compared exactly as sent: never trimmed (an entity ID is a URI; whitespace is not part of one).
    issuer = (issuers[0].text or "") if len(issuers) == 1 else ""
    if not issuer.strip():
        raise RequestError(f"AuthnRequest {request_id} has no (single, non-empty) saml:Issuer",
                           code="issuer_missing")
    issuer_format = issuers[0].get("Format")
    if issuer_format not in (None, NAMEID_ENTITY):
        raise RequestError(f"AuthnRequest Issuer Format is {issuer_format!r}; expected {NAMEID_ENTITY} or none",
                           code="request_malformed")

    acs_url = root.get("AssertionConsumerServiceURL")
    acs_index_text = root.get("AssertionConsumerServiceIndex")
    acs_index: int | None = None
    if acs_index_text is not None:
        try:
            acs_index = int(acs_index_text)
        except ValueError as exc:
            raise RequestError(f"AssertionConsumerServiceIndex {acs_index_text!r} is not an integer",
                               code="request_malformed") from exc
        if acs_url is not None:
            raise RequestError("AuthnRequest names both AssertionConsumerServiceURL and "
                               "AssertionConsumerServiceIndex; SAML core §3.4.1 allows one",
                               code="request_malformed")

    policy = root.find(qname(NS_SAMLP, "NameIDPolicy"))
    name_id_format = sp_name_qualifier = None
    allow_create: bool | None = None
    if policy is not None:
        name_id_format = policy.get("Format")
        sp_name_qualifier = policy.get("SPNameQualifier")
        if policy.get("AllowCreate") is not None:
            allow_create = _bool_attr(policy, "AllowCreate", False)

    return AuthnRequest(
        id=request_id,
        issuer=issuer,
        issue_instant=issue_instant,
        destination=root.get("Destination"),
        acs_url=acs_url,
        acs_index=acs_index,
        protocol_binding=root.get("ProtocolBinding"),
        force_authn=_bool_attr(root, "ForceAuthn", False),
        is_passive=_bool_attr(root, "IsPassive", False),
        name_id_format=name_id_format,
        sp_name_qualifier=sp_name_qualifier,
        allow_create=allow_create,
        version=version,
        has_name_id_policy=policy is not None,
    )


def find_sp(issuer: str, sps: Iterable[ServiceProviderMetadata]) -> ServiceProviderMetadata:
    """The configured SP whose entityID equals ``issuer`` exactly."""
    known = list(sps)
    for sp in known:
        if sp.entity_id == issuer:
            return sp
    raise RequestError(f"AuthnRequest Issuer {issuer!r} is not a configured SP; known entity IDs: "
                       + (", ".join(sp.entity_id for sp in known) or "none"), code="unknown_issuer")


# --------------------------------------------------------------------------- the rules, as Checks

#: The checks :func:`judge_authn_request` records, in the order the live path applies them.
REQUEST_CHECKS = ("issuer", "signature", "destination", "protocol_binding", "issue_instant", "acs",
                  "name_id_policy")
#: NameID formats we can issue: transient, or "whatever you issue" (SAML core §8.3.1).
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
ISSUABLE_NAMEID_FORMATS = (NAMEID_TRANSIENT, NAMEID_UNSPECIFIED)


@dataclass(frozen=True)
class RequestVerdict:
    """Every rule's :class:`Check` for one AuthnRequest; :meth:`accept` is the live path's decision."""

    request: AuthnRequest
    checks: Checks
    #: Where a Response would go (from the SP's metadata), when the ACS check passed.
    acs_url: str | None
    sp_entity_id: str | None
    #: The certificate that verified the query signature (None when unsigned or unverified).
    certificate: x509.Certificate | None = None

    @property
    def ok(self) -> bool:
        return self.checks.ok

    def accept(self) -> AcceptedRequest:
        """The accepted request, or the typed error of the first failed check.

        A NameIDPolicy we cannot satisfy (all else being fine) raises :class:`StatusResponseError`: the
        caller answers the SP with a signed ``InvalidNameIDPolicy`` Response at ``acs_url``.
        """
        failed = self.checks.first_failure()
        if failed is None:
            assert self.acs_url is not None and self.sp_entity_id is not None
            return AcceptedRequest(request=self.request, acs_url=self.acs_url, sp_entity_id=self.sp_entity_id)
        if failed.name == "name_id_policy" and self.acs_url is not None:
            raise StatusResponseError(failed.detail, code=failed.code, sub_status=STATUS_INVALID_NAMEID_POLICY,
                                      acs_url=self.acs_url, in_response_to=self.request.id)
        error = SignatureError if failed.name == "signature" else RequestError
        raise error(failed.detail, code=failed.code)


def _signature_check(checks: Checks, redirect: RedirectMessage | None, sp: ServiceProviderMetadata | None,
                     ) -> tuple[bool, x509.Certificate | None]:
    """Record the query-signature check; return (signed and verified, certificate)."""
    if sp is None:
        checks.skip("signature", "a query signature by the SP's metadata key", "the Issuer is not a configured SP",
                    code="unknown_issuer")
        return False, None
    fps = ", ".join(fingerprint(c) for c in sp.signing_certificates) or "none"
    expected = (f"query signature by {fps}" if sp.authn_requests_signed
                else f"unsigned, or a query signature by {fps}")
    message = redirect or RedirectMessage(xml=b"", relay_state=None, sig_alg=None, signature=None,
                                          signed_octets=None, param="SAMLRequest")
    try:
        cert = verify_redirect_signature(message, sp.signing_certificates, required=sp.authn_requests_signed)
    except SignatureError as exc:
        actual = "unsigned" if exc.code == "signature_missing" else exc.operator
        checks.add("signature", False, expected, actual, code=exc.code, detail=exc.operator)
        return False, None
    if cert is None:
        checks.add("signature", True, expected, "unsigned (this SP's metadata allows it)")
        return False, None
    checks.add("signature", True, expected, f"query signature ({message.sig_alg}) verified with {fingerprint(cert)}")
    return True, cert


def _choose_acs(checks: Checks, req: AuthnRequest, sp: ServiceProviderMetadata) -> str | None:
    posts = sp.post_acs_endpoints
    listed = ", ".join(f"{e.location} [index {e.index}, {e.binding}]" for e in sp.acs_endpoints)
    expected = f"an HTTP-POST ACS of SP {sp.entity_id}'s metadata: {listed or 'none'}"

    def refuse(actual: str, code: str, detail: str) -> None:
        checks.add("acs", False, expected, actual, code=code, detail=detail)

    if req.acs_url is not None:
        if req.acs_url not in sp.acs_locations:
            refuse(req.acs_url, "acs_not_in_metadata", f"AssertionConsumerServiceURL {req.acs_url!r} is not in the "
                   f"metadata of SP {sp.entity_id}; metadata lists: {listed}")
            return None
        if not any(e.location == req.acs_url for e in posts):
            refuse(req.acs_url, "acs_binding_unsupported", f"ACS {req.acs_url!r} of SP {sp.entity_id} has no "
                   f"HTTP-POST binding in metadata; metadata lists: {listed}")
            return None
        checks.add("acs", True, expected, req.acs_url)
        return req.acs_url
    if req.acs_index is not None:
        match = [e for e in sp.acs_endpoints if e.index == req.acs_index]
        if not match:
            refuse(f"index {req.acs_index}", "acs_not_in_metadata", f"AssertionConsumerServiceIndex "
                   f"{req.acs_index} is not in the metadata of SP {sp.entity_id}; metadata lists: {listed}")
            return None
        if match[0].binding != BINDING_POST:
            refuse(f"index {req.acs_index} ({match[0].binding})", "acs_binding_unsupported",
                   f"ACS index {req.acs_index} of SP {sp.entity_id} uses {match[0].binding}; only "
                   f"{BINDING_POST} is supported")
            return None
        checks.add("acs", True, expected, f"index {req.acs_index}: {match[0].location}")
        return match[0].location
    try:
        location = sp.default_acs().location
    except MetadataError as exc:
        refuse("(absent: default ACS)", exc.code, exc.operator)
        return None
    checks.add("acs", True, expected, f"(absent: default ACS) {location}")
    return location


def _iso(value: datetime) -> str:
    return format_xs_datetime(value, "milliseconds")


def judge_authn_request(req: AuthnRequest, *, sp: ServiceProviderMetadata | None, sso_urls: Sequence[str],
                        now: datetime, skew: timedelta = timedelta(minutes=3),
                        redirect: RedirectMessage | None = None,
                        known_entity_ids: Sequence[str] = ()) -> RequestVerdict:
    """Apply every rule of the Huawei profile to a parsed AuthnRequest; record each as a Check.

    ``sp`` is the configured SP whose entity ID is the Issuer (None: none is). ``redirect`` is the
    HTTP-Redirect message it came in (None: no query, so no query signature). Replay (seen IDs) is
    the caller's job with the database.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    checks = Checks()
    if sp is None or req.issuer != sp.entity_id:
        known = ", ".join(known_entity_ids or ([sp.entity_id] if sp else [])) or "none"
        checks.add("issuer", False, f"the entity ID of a configured SP ({known})", repr(req.issuer),
                   code="unknown_issuer",
                   detail=f"AuthnRequest Issuer {req.issuer!r} is not a configured SP; known entity IDs: {known}")
        sp = None
    else:
        checks.add("issuer", True, sp.entity_id, repr(req.issuer))
    signed, cert = _signature_check(checks, redirect, sp)

    sso = " or ".join(sso_urls)
    if req.destination is None:
        # SAML bindings §3.4.5.2: a signed message MUST carry Destination (or the signature could be replayed
        # at another IdP that trusts the same SP key).
        checks.add("destination", not signed, f"{sso} (required: the request is signed)" if signed else sso,
                   "(absent)", code="destination_missing",
                   detail="the AuthnRequest is signed but carries no Destination; SAML bindings §3.4.5.2 requires "
                          f"it (expected {sso})")
    else:
        checks.add("destination", req.destination in sso_urls, sso, req.destination, code="destination_mismatch",
                   detail=f"AuthnRequest Destination {req.destination!r} is not our SSO URL; expected one of: "
                          + ", ".join(sso_urls))
    checks.add("protocol_binding", req.protocol_binding in (None, BINDING_POST), f"{BINDING_POST} or absent",
               req.protocol_binding or "(absent)", code="binding_unsupported",
               detail=f"AuthnRequest asks for ProtocolBinding {req.protocol_binding!r}; only {BINDING_POST} is "
                      "supported")
    window = f"{_iso(now - skew)} … {_iso(now + skew)} (now {_iso(now)} ± {skew})"
    if req.issue_instant < now - skew:
        checks.add("issue_instant", False, window, _iso(req.issue_instant), code="request_stale",
                   detail=f"AuthnRequest {req.id} IssueInstant {_iso(req.issue_instant)} is older than now "
                          f"{_iso(now)} minus the allowed skew {skew}")
    elif req.issue_instant > now + skew:
        checks.add("issue_instant", False, window, _iso(req.issue_instant), code="request_from_future",
                   detail=f"AuthnRequest {req.id} IssueInstant {_iso(req.issue_instant)} is later than now "
                          f"{_iso(now)} plus the allowed skew {skew}")
    else:
        checks.add("issue_instant", True, window, _iso(req.issue_instant))

    acs_url: str | None = None
    policy_expected = ("NameIDPolicy absent, or Format " + " or ".join(ISSUABLE_NAMEID_FORMATS)
                       + " and SPNameQualifier absent or the SP's entity ID")
    if sp is None:
        checks.skip("acs", "an HTTP-POST ACS of the SP's metadata", "the Issuer is not a configured SP",
                    code="unknown_issuer")
        checks.skip("name_id_policy", policy_expected, "the Issuer is not a configured SP", code="unknown_issuer")
    else:
        acs_url = _choose_acs(checks, req, sp)
        fmt_ok = req.name_id_format is None or req.name_id_format in ISSUABLE_NAMEID_FORMATS
        spnq_ok = req.sp_name_qualifier is None or req.sp_name_qualifier == sp.entity_id
        actual = (f"Format {req.name_id_format or '(absent)'}, SPNameQualifier {req.sp_name_qualifier or '(absent)'}"
                  if req.has_name_id_policy else "(no NameIDPolicy)")
        checks.add("name_id_policy", fmt_ok and spnq_ok, policy_expected, actual, code="invalid_name_id_policy",
                   detail=f"AuthnRequest {req.id} asks for a NameID we cannot issue ({actual}); we issue "
                          f"{NAMEID_TRANSIENT} qualified by {sp.entity_id}: answered with a signed "
                          "InvalidNameIDPolicy Response")
    return RequestVerdict(request=req, checks=checks, acs_url=acs_url,
                          sp_entity_id=sp.entity_id if sp is not None else None, certificate=cert)


def check_authn_request(req: AuthnRequest, *, sp: ServiceProviderMetadata, sso_urls: Sequence[str],
                        now: datetime, skew: timedelta = timedelta(minutes=3),
                        redirect: RedirectMessage | None = None) -> AcceptedRequest:
    """The live decision: :func:`judge_authn_request`, raising the first failed check's typed error."""
    return judge_authn_request(req, sp=sp, sso_urls=sso_urls, now=now, skew=skew, redirect=redirect).accept()


_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_request_id() -> str:
    """An xs:ID like Huawei's (``_`` + 36 lower-case alphanumerics, ~186 bits)."""
    return "_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(36))


def build_authn_request(*, issuer: str, destination: str, acs_url: str, now: datetime,
                        request_id: str | None = None, name_id_format: str = NAMEID_TRANSIENT,
                        sp_name_qualifier: str | None = None) -> bytes:
    """An AuthnRequest shaped like Huawei IAM's (simulator and tests). ``sp_name_qualifier`` defaults to
    the issuer, as in Huawei's sample."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    root = etree.Element(qname(NS_SAMLP, "AuthnRequest"), nsmap={"saml2p": NS_SAMLP})
    # Attribute order as Huawei's sample (alphabetical).
    root.set("AssertionConsumerServiceURL", acs_url)
    root.set("Destination", destination)
    root.set("ForceAuthn", "false")
    root.set("ID", request_id or new_request_id())
    root.set("IsPassive", "false")
    root.set("IssueInstant", format_xs_datetime(now, "milliseconds"))
    root.set("ProtocolBinding", BINDING_POST)
    root.set("Version", "2.0")
    issuer_el = etree.SubElement(root, qname(NS_SAML, "Issuer"), nsmap={"saml2": NS_SAML})
    issuer_el.text = issuer
    etree.SubElement(root, qname(NS_SAMLP, "NameIDPolicy"), AllowCreate="true", Format=name_id_format,
                     SPNameQualifier=sp_name_qualifier if sp_name_qualifier is not None else issuer)
    body: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + body
