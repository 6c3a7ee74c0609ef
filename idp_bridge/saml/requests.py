"""AuthnRequest: parse what Huawei IAM sends, check it against the SP's metadata, build one (simulator).

Parsing is structural only; ``check_authn_request`` applies the trust decisions (issuer, Destination,
ACS from metadata, clock skew). Replay (seen IDs) is the caller's job with the database.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lxml import etree

from idp_bridge.saml.errors import RequestError
from idp_bridge.saml.metadata import ServiceProviderMetadata, parse_xs_boolean, parse_xs_datetime
from idp_bridge.saml.xml import (
    BINDING_POST,
    NAMEID_TRANSIENT,
    NS_DS,
    NS_SAML,
    NS_SAMLP,
    parse_untrusted,
    qname,
)

NAMEID_ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"


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

    instant_text = root.get("IssueInstant")
    if instant_text is None:
        raise RequestError(f"AuthnRequest {request_id} has no IssueInstant", code="request_malformed")
    try:
        issue_instant = parse_xs_datetime(instant_text)
    except ValueError as exc:
        raise RequestError(f"AuthnRequest {request_id}: IssueInstant {instant_text!r} is not an xs:dateTime",
                           code="request_malformed") from exc

    issuers = root.findall(qname(NS_SAML, "Issuer"))
    issuer = (issuers[0].text or "").strip() if len(issuers) == 1 else ""
    if not issuer:
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
    )


def find_sp(issuer: str, sps: Iterable[ServiceProviderMetadata]) -> ServiceProviderMetadata:
    """The configured SP whose entityID equals ``issuer`` exactly."""
    known = list(sps)
    for sp in known:
        if sp.entity_id == issuer:
            return sp
    raise RequestError(f"AuthnRequest Issuer {issuer!r} is not a configured SP; known entity IDs: "
                       + (", ".join(sp.entity_id for sp in known) or "none"), code="unknown_issuer")


def _choose_acs(req: AuthnRequest, sp: ServiceProviderMetadata) -> str:
    posts = sp.post_acs_endpoints
    listed = ", ".join(f"{e.location} [index {e.index}, {e.binding}]" for e in sp.acs_endpoints)
    if req.acs_url is not None:
        if req.acs_url not in sp.acs_locations:
            raise RequestError(f"AssertionConsumerServiceURL {req.acs_url!r} is not in the metadata of SP "
                               f"{sp.entity_id}; metadata lists: {listed}", code="acs_not_in_metadata")
        if not any(e.location == req.acs_url for e in posts):
            raise RequestError(f"ACS {req.acs_url!r} of SP {sp.entity_id} has no HTTP-POST binding in "
                               f"metadata; metadata lists: {listed}", code="acs_binding_unsupported")
        return req.acs_url
    if req.acs_index is not None:
        match = [e for e in sp.acs_endpoints if e.index == req.acs_index]
        if not match:
            raise RequestError(f"AssertionConsumerServiceIndex {req.acs_index} is not in the metadata of SP "
                               f"{sp.entity_id}; metadata lists: {listed}", code="acs_not_in_metadata")
        if match[0].binding != BINDING_POST:
            raise RequestError(f"ACS index {req.acs_index} of SP {sp.entity_id} uses {match[0].binding}; only "
                               f"{BINDING_POST} is supported", code="acs_binding_unsupported")
        return match[0].location
    return sp.default_acs().location


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_authn_request(req: AuthnRequest, *, sp: ServiceProviderMetadata, sso_urls: Sequence[str],
                        now: datetime, skew: timedelta = timedelta(minutes=3)) -> AcceptedRequest:
    """Apply the trust checks of the Huawei profile; return where to send the Response."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if req.issuer != sp.entity_id:
        raise RequestError(f"AuthnRequest Issuer {req.issuer!r} is not SP {sp.entity_id!r}",
                           code="unknown_issuer")
    if req.destination is not None and req.destination not in sso_urls:
        raise RequestError(f"AuthnRequest Destination {req.destination!r} is not our SSO URL; expected one of: "
                           + ", ".join(sso_urls), code="destination_mismatch")
    if req.protocol_binding is not None and req.protocol_binding != BINDING_POST:
        raise RequestError(f"AuthnRequest asks for ProtocolBinding {req.protocol_binding!r}; only "
                           f"{BINDING_POST} is supported", code="binding_unsupported")
    if req.issue_instant < now - skew:
        raise RequestError(f"AuthnRequest {req.id} IssueInstant {_iso(req.issue_instant)} is older than "
                           f"now {_iso(now)} minus the allowed skew {skew}", code="request_stale")
    if req.issue_instant > now + skew:
        raise RequestError(f"AuthnRequest {req.id} IssueInstant {_iso(req.issue_instant)} is later than "
                           f"now {_iso(now)} plus the allowed skew {skew}", code="request_from_future")
    return AcceptedRequest(request=req, acs_url=_choose_acs(req, sp), sp_entity_id=sp.entity_id)


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
    root.set("IssueInstant", _iso(now))
    root.set("ProtocolBinding", BINDING_POST)
    root.set("Version", "2.0")
    issuer_el = etree.SubElement(root, qname(NS_SAML, "Issuer"), nsmap={"saml2": NS_SAML})
    issuer_el.text = issuer
    etree.SubElement(root, qname(NS_SAMLP, "NameIDPolicy"), AllowCreate="true", Format=name_id_format,
                     SPNameQualifier=sp_name_qualifier if sp_name_qualifier is not None else issuer)
    body: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + body
