"""IdP metadata as an SP reads it (Huawei IAM, the simulator, ``trust-test``): entity ID, SSO URLs, certificates.

Rule: only what an SP relies on is read, and everything missing or malformed is a ``MetadataError`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from idp_bridge.saml.certificates import load_certificate_b64
from idp_bridge.saml.errors import MetadataError
from idp_bridge.saml.time import parse_instant
from idp_bridge.saml.xml import BINDING_POST, BINDING_REDIRECT, NS_DS, NS_MD, NS_SAMLP, parse_untrusted, qname


@dataclass(frozen=True)
class IdpMetadata:
    """The parts of our IdP metadata an SP relies on."""

    entity_id: str
    sso_redirect_url: str
    sso_post_url: str | None
    signing_certificates: tuple[x509.Certificate, ...]
    want_authn_requests_signed: bool
    valid_until: datetime | None


def parse_idp_metadata(xml: bytes) -> IdpMetadata:
    """Read IdP metadata (an EntityDescriptor, or an EntitiesDescriptor holding exactly one IdP).

    Raises MetadataError naming what is missing or malformed.
    """
    root = parse_untrusted(xml, what="IdP metadata", error=MetadataError)
    if root.tag == qname(NS_MD, "EntitiesDescriptor"):
        entities = [e for e in root.iter(qname(NS_MD, "EntityDescriptor"))
                    if e.find(qname(NS_MD, "IDPSSODescriptor")) is not None]
        if len(entities) != 1:
            raise MetadataError(f"IdP metadata EntitiesDescriptor holds {len(entities)} IdP entities; "
                                "expected exactly one", code="metadata_idp_count")
        entity = entities[0]
    elif root.tag == qname(NS_MD, "EntityDescriptor"):
        entity = root
    else:
        raise MetadataError(f"IdP metadata root is {root.tag!r}; expected md:EntityDescriptor",
                            code="metadata_root")
    entity_id = (entity.get("entityID") or "").strip()
    if not entity_id:
        raise MetadataError("IdP metadata EntityDescriptor has no entityID", code="metadata_entity_id")
    idps = entity.findall(qname(NS_MD, "IDPSSODescriptor"))
    if len(idps) != 1:
        raise MetadataError(f"IdP metadata for {entity_id!r} has {len(idps)} IDPSSODescriptor elements; "
                            "expected exactly one", code="metadata_idp_descriptor")
    idp = idps[0]
    if NS_SAMLP not in (idp.get("protocolSupportEnumeration") or "").split():
        raise MetadataError(f"IDPSSODescriptor of {entity_id!r} does not list the SAML 2.0 protocol "
                            f"{NS_SAMLP!r} in protocolSupportEnumeration", code="metadata_protocol")

    redirect_url: str | None = None
    post_url: str | None = None
    for sso in idp.findall(qname(NS_MD, "SingleSignOnService")):
        binding, location = sso.get("Binding"), (sso.get("Location") or "").strip()
        if binding == BINDING_REDIRECT and location and redirect_url is None:
            redirect_url = location
        elif binding == BINDING_POST and location and post_url is None:
            post_url = location
    if redirect_url is None:
        raise MetadataError(f"IdP metadata for {entity_id!r} has no SingleSignOnService with Binding "
                            f"{BINDING_REDIRECT!r}", code="metadata_sso_missing")

    certificates: list[x509.Certificate] = []
    for kd in idp.findall(qname(NS_MD, "KeyDescriptor")):
        if kd.get("use") not in (None, "", "signing"):
            continue
        for node in kd.iter(qname(NS_DS, "X509Certificate")):
            certificates.append(_load_certificate(node.text or "", entity_id))
    if not certificates:
        raise MetadataError(f"IdP metadata for {entity_id!r} has no signing certificate "
                            "(KeyDescriptor use=\"signing\" or without use, with ds:X509Certificate)",
                            code="metadata_no_certificate")

    valid_until: datetime | None = None
    raw_valid_until = entity.get("validUntil") or root.get("validUntil")
    if raw_valid_until:
        parsed = parse_instant(raw_valid_until)
        if parsed is None:
            raise MetadataError(f"IdP metadata validUntil {raw_valid_until!r} is not an xs:dateTime",
                                code="metadata_valid_until")
        valid_until = parsed

    return IdpMetadata(
        entity_id=entity_id,
        sso_redirect_url=redirect_url,
        sso_post_url=post_url,
        signing_certificates=tuple(certificates),
        want_authn_requests_signed=(idp.get("WantAuthnRequestsSigned") or "").strip() in ("true", "1"),
        valid_until=valid_until,
    )


def _load_certificate(text: str, entity_id: str) -> x509.Certificate:
    try:
        return load_certificate_b64(text)
    except ValueError as exc:
        raise MetadataError(f"IdP metadata for {entity_id!r} has an unreadable ds:X509Certificate: {exc}",
                            code="metadata_certificate") from exc
