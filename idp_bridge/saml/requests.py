"""AuthnRequest: parse what Huawei IAM sends and judge it against the SP's metadata (building one, the SP's
side, is saml/request_builder.py).

Rule: every AuthnRequest rule is written once, here. Parsing is structural (and strict where SAML is:
the Issuer is compared exactly, never trimmed, and may hold nothing but text). :func:`judge_authn_request`
records every trust rule as a :class:`~idp_bridge.saml.checks.Check` (Issuer, query signature,
Destination, ProtocolBinding, IssueInstant, ACS from metadata, NameIDPolicy); the live path raises the
typed error of the first failed one (:meth:`RequestVerdict.accept`), ``decode`` shows them all. Replay
(seen IDs) is the caller's job with the database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import NamedTuple

from cryptography import x509
from lxml import etree

from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.bindings import RedirectMessage, verify_redirect_signature
from idp_bridge.saml.checks import NOT_CHECKED, Checks
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
_SAMLP_AUTHN_REQUEST = qname(NS_SAMLP, "AuthnRequest")
_SAMLP_NAME_ID_POLICY = qname(NS_SAMLP, "NameIDPolicy")
_SAML_ISSUER = qname(NS_SAML, "Issuer")
_DS_SIGNATURE = qname(NS_DS, "Signature")


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
    if root.tag != _SAMLP_AUTHN_REQUEST:
        raise RequestError(f"message root is {root.tag}; expected {{{NS_SAMLP}}}AuthnRequest",
                           code="not_authn_request")
    if next(root.iter(_DS_SIGNATURE), None) is not None:
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

    issuers = list(root.iterchildren(_SAML_ISSUER))  # = findall(), without its ElementPath machinery
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

    policy = next(root.iterchildren(_SAMLP_NAME_ID_POLICY), None)  # = find()
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


class _Rule(NamedTuple):
    """One rule's outcome, decided when judged; its texts are written only when someone reads them."""

    name: str
    ok: bool
    code: str
    #: ``(expected, actual, detail)``: the :class:`Check` texts (``detail`` is only kept when not ok).
    texts: Callable[[], tuple[str, str, str]]


def _skipped(name: str, expected: str, why: str, code: str) -> _Rule:
    """:meth:`Checks.skip` as a :class:`_Rule`."""
    return _Rule(name, False, code, lambda: (expected, NOT_CHECKED + why, NOT_CHECKED + why))


@dataclass(frozen=True)
class RequestVerdict:
    """Every rule's :class:`Check` for one AuthnRequest; :meth:`accept` is the live path's decision.

    The rules are decided when judged, but their operator-facing texts (fingerprints, ACS lists, time
    windows) are written only when read: :attr:`checks` writes them all (``decode``, ``check``), while
    :meth:`accept`, the live path, writes only the message of the first failed rule, if any.
    """

    request: AuthnRequest
    _rules: tuple[_Rule, ...] = field(repr=False)
    #: Where a Response would go (from the SP's metadata), when the ACS check passed.
    acs_url: str | None
    sp_entity_id: str | None
    #: The certificate that verified the query signature (None when unsigned or unverified).
    certificate: x509.Certificate | None = None

    @cached_property
    def checks(self) -> Checks:
        checks = Checks()
        for rule in self._rules:
            expected, actual, detail = rule.texts()
            checks.add(rule.name, rule.ok, expected, actual, code=rule.code, detail=detail)
        return checks

    @property
    def ok(self) -> bool:
        return bool(self._rules) and all(rule.ok for rule in self._rules)

    def accept(self) -> AcceptedRequest:
        """The accepted request, or the typed error of the first failed check.

        A NameIDPolicy we cannot satisfy (all else being fine) raises :class:`StatusResponseError`: the
        caller answers the SP with a signed ``InvalidNameIDPolicy`` Response at ``acs_url``.
        """
        failed = next((rule for rule in self._rules if not rule.ok), None)
        if failed is None:
            assert self.acs_url is not None and self.sp_entity_id is not None
            return AcceptedRequest(request=self.request, acs_url=self.acs_url, sp_entity_id=self.sp_entity_id)
        detail = failed.texts()[2]
        if failed.name == "name_id_policy" and self.acs_url is not None:
            raise StatusResponseError(detail, code=failed.code, sub_status=STATUS_INVALID_NAMEID_POLICY,
                                      acs_url=self.acs_url, in_response_to=self.request.id)
        error = SignatureError if failed.name == "signature" else RequestError
        raise error(detail, code=failed.code)


_NO_QUERY = RedirectMessage(xml=b"", relay_state=None, sig_alg=None, signature=None, signed_octets=None,
                            param="SAMLRequest")


def _signature_rule(redirect: RedirectMessage | None, sp: ServiceProviderMetadata | None,
                    ) -> tuple[_Rule, x509.Certificate | None]:
    """The query-signature rule, and the certificate that verified (None: unsigned or not verified)."""
    if sp is None:
        return _skipped("signature", "a query signature by the SP's metadata key", "the Issuer is not a configured SP",
                        code="unknown_issuer"), None
    certificates, required = sp.signing_certificates, sp.authn_requests_signed

    def expected() -> str:
        fps = ", ".join(fingerprint(c) for c in certificates) or "none"
        return f"query signature by {fps}" if required else f"unsigned, or a query signature by {fps}"

    message = redirect or _NO_QUERY
    try:
        cert = verify_redirect_signature(message, certificates, required=required)
    except SignatureError as exc:
        code, operator = exc.code, exc.operator  # ``exc`` itself is unbound after the except block
        actual = "unsigned" if code == "signature_missing" else operator
        return _Rule("signature", False, code, lambda: (expected(), actual, operator)), None
    if cert is None:
        return _Rule("signature", True, "", lambda: (expected(), "unsigned (this SP's metadata allows it)", "")), None
    verified_by = cert
    return _Rule("signature", True, "", lambda: (
        expected(), f"query signature ({message.sig_alg}) verified with {fingerprint(verified_by)}", "")), cert


def _acs_rule(req: AuthnRequest, sp: ServiceProviderMetadata) -> tuple[_Rule, str | None]:
    """The ACS rule, and the location the Response goes to (None: refused)."""

    def listed() -> str:
        return ", ".join(f"{e.location} [index {e.index}, {e.binding}]" for e in sp.acs_endpoints)

    def expected() -> str:
        return f"an HTTP-POST ACS of SP {sp.entity_id}'s metadata: {listed() or 'none'}"

    def passed(actual: str, location: str) -> tuple[_Rule, str | None]:
        return _Rule("acs", True, "", lambda: (expected(), actual, "")), location

    def refused(actual: str, code: str, detail: str) -> tuple[_Rule, str | None]:
        return _Rule("acs", False, code, lambda: (expected(), actual, detail)), None

    if req.acs_url is not None:
        at_url = [e for e in sp.acs_endpoints if e.location == req.acs_url]
        if not at_url:
            return refused(req.acs_url, "acs_not_in_metadata", f"AssertionConsumerServiceURL {req.acs_url!r} is not "
                           f"in the metadata of SP {sp.entity_id}; metadata lists: {listed()}")
        if not any(e.binding == BINDING_POST for e in at_url):
            return refused(req.acs_url, "acs_binding_unsupported", f"ACS {req.acs_url!r} of SP {sp.entity_id} has "
                           f"no HTTP-POST binding in metadata; metadata lists: {listed()}")
        return passed(req.acs_url, req.acs_url)
    if req.acs_index is not None:
        match = [e for e in sp.acs_endpoints if e.index == req.acs_index]
        if not match:
            return refused(f"index {req.acs_index}", "acs_not_in_metadata", f"AssertionConsumerServiceIndex "
                           f"{req.acs_index} is not in the metadata of SP {sp.entity_id}; metadata lists: {listed()}")
        if match[0].binding != BINDING_POST:
            return refused(f"index {req.acs_index} ({match[0].binding})", "acs_binding_unsupported",
                           f"ACS index {req.acs_index} of SP {sp.entity_id} uses {match[0].binding}; only "
                           f"{BINDING_POST} is supported")
        return passed(f"index {req.acs_index}: {match[0].location}", match[0].location)
    try:
        location = sp.default_acs().location
    except MetadataError as exc:
        return refused("(absent: default ACS)", exc.code, exc.operator)
    return passed(f"(absent: default ACS) {location}", location)


def _iso(value: datetime) -> str:
    return format_xs_datetime(value, "milliseconds")


_POLICY_EXPECTED = ("NameIDPolicy absent, or Format " + " or ".join(ISSUABLE_NAMEID_FORMATS)
                    + " and SPNameQualifier absent or the SP's entity ID")


def judge_authn_request(req: AuthnRequest, *, sp: ServiceProviderMetadata | None, sso_urls: Sequence[str],
                        now: datetime, skew: timedelta = timedelta(minutes=3),
                        redirect: RedirectMessage | None = None,
                        known_entity_ids: Sequence[str] = ()) -> RequestVerdict:
    """Apply every rule of the Huawei profile to a parsed AuthnRequest; record each as a Check.

    ``sp`` is the configured SP whose entity ID is the Issuer (None: none is). ``redirect`` is the
    HTTP-Redirect message it came in (None: no query, so no query signature). Replay (seen IDs) is
    the caller's job with the database.

    Each rule's outcome is decided here; its texts are closures over values that do not change (the
    sequences are copied), run only when read (see :class:`RequestVerdict`).
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    sso_urls, known_entity_ids = tuple(sso_urls), tuple(known_entity_ids)
    rules: list[_Rule] = []
    if sp is None or req.issuer != sp.entity_id:
        known = ", ".join(known_entity_ids or ([sp.entity_id] if sp else [])) or "none"
        rules.append(_Rule("issuer", False, code="unknown_issuer", texts=lambda: (
            f"the entity ID of a configured SP ({known})", repr(req.issuer),
            f"AuthnRequest Issuer {req.issuer!r} is not a configured SP; known entity IDs: {known}")))
        sp = None
    else:
        entity_id = sp.entity_id
        rules.append(_Rule("issuer", True, "", lambda: (entity_id, repr(req.issuer), "")))
    signature, cert = _signature_rule(redirect, sp)
    rules.append(signature)
    signed = cert is not None

    if req.destination is None:
        # SAML bindings §3.4.5.2: a signed message MUST carry Destination (or the signature could be replayed
        # at another IdP that trusts the same SP key).
        rules.append(_Rule("destination", not signed, code="destination_missing", texts=lambda: (
            f"{' or '.join(sso_urls)} (required: the request is signed)" if signed else " or ".join(sso_urls),
            "(absent)",
            "the AuthnRequest is signed but carries no Destination; SAML bindings §3.4.5.2 requires "
            f"it (expected {' or '.join(sso_urls)})")))
    else:
        destination = req.destination
        rules.append(_Rule("destination", destination in sso_urls, code="destination_mismatch", texts=lambda: (
            " or ".join(sso_urls), destination,
            f"AuthnRequest Destination {destination!r} is not our SSO URL; expected one of: " + ", ".join(sso_urls))))
    rules.append(_Rule("protocol_binding", req.protocol_binding in (None, BINDING_POST), code="binding_unsupported",
                       texts=lambda: (f"{BINDING_POST} or absent", req.protocol_binding or "(absent)",
                                      f"AuthnRequest asks for ProtocolBinding {req.protocol_binding!r}; only "
                                      f"{BINDING_POST} is supported")))

    earliest, latest = now - skew, now + skew

    def window() -> str:
        return f"{_iso(earliest)} … {_iso(latest)} (now {_iso(now)} ± {skew})"

    if req.issue_instant < earliest:
        rules.append(_Rule("issue_instant", False, code="request_stale", texts=lambda: (
            window(), _iso(req.issue_instant),
            f"AuthnRequest {req.id} IssueInstant {_iso(req.issue_instant)} is older than now "
            f"{_iso(now)} minus the allowed skew {skew}")))
    elif req.issue_instant > latest:
        rules.append(_Rule("issue_instant", False, code="request_from_future", texts=lambda: (
            window(), _iso(req.issue_instant),
            f"AuthnRequest {req.id} IssueInstant {_iso(req.issue_instant)} is later than now "
            f"{_iso(now)} plus the allowed skew {skew}")))
    else:
        rules.append(_Rule("issue_instant", True, "", lambda: (window(), _iso(req.issue_instant), "")))

    acs_url: str | None = None
    if sp is None:
        rules.append(_skipped("acs", "an HTTP-POST ACS of the SP's metadata", "the Issuer is not a configured SP",
                              code="unknown_issuer"))
        rules.append(_skipped("name_id_policy", _POLICY_EXPECTED, "the Issuer is not a configured SP",
                              code="unknown_issuer"))
    else:
        acs, acs_url = _acs_rule(req, sp)
        rules.append(acs)
        entity_id = sp.entity_id
        fmt_ok = req.name_id_format is None or req.name_id_format in ISSUABLE_NAMEID_FORMATS
        spnq_ok = req.sp_name_qualifier is None or req.sp_name_qualifier == entity_id

        def policy_texts() -> tuple[str, str, str]:
            actual = (f"Format {req.name_id_format or '(absent)'}, SPNameQualifier "
                      f"{req.sp_name_qualifier or '(absent)'}" if req.has_name_id_policy else "(no NameIDPolicy)")
            return (_POLICY_EXPECTED, actual,
                    f"AuthnRequest {req.id} asks for a NameID we cannot issue ({actual}); we issue "
                    f"{NAMEID_TRANSIENT} qualified by {entity_id}: answered with a signed "
                    "InvalidNameIDPolicy Response")

        rules.append(_Rule("name_id_policy", fmt_ok and spnq_ok, code="invalid_name_id_policy",
                           texts=policy_texts))
    return RequestVerdict(request=req, _rules=tuple(rules), acs_url=acs_url,
                          sp_entity_id=sp.entity_id if sp is not None else None, certificate=cert)


def check_authn_request(req: AuthnRequest, *, sp: ServiceProviderMetadata, sso_urls: Sequence[str],
                        now: datetime, skew: timedelta = timedelta(minutes=3),
                        redirect: RedirectMessage | None = None) -> AcceptedRequest:
    """The live decision: :func:`judge_authn_request`, raising the first failed check's typed error."""
    return judge_authn_request(req, sp=sp, sso_urls=sso_urls, now=now, skew=skew, redirect=redirect).accept()
