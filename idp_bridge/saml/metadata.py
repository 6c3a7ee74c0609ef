"""SAML 2.0 metadata: read an SP's (Huawei IAM's), write ours.

Reading never requires the SP's own metadata signature: the document is trusted because an
operator configured it (file or pinned URL), not because of what it says about itself.

Writing is deterministic: same inputs give byte-identical output (no random IDs, no clock), so
the published document, its ETag and what an operator uploaded to Partner Center can be compared.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from idp_bridge.saml import time
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.certificates import load_certificate_b64
from idp_bridge.saml.errors import MetadataError
from idp_bridge.saml.time import parse_xs_datetime
from idp_bridge.saml.xml import (
    BINDING_POST,
    BINDING_REDIRECT,
    MAX_XML_BYTES,
    NAMEID_TRANSIENT,
    NS_DS,
    NS_MD,
    parse_untrusted,
    qname,
)

PROTOCOL_SAML2 = "urn:oasis:names:tc:SAML:2.0:protocol"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_MIN_RSA_BITS = 2048
#: SAML V2.0 Metadata Profile for Algorithm Support (alg:SigningMethod, alg:DigestMethod).
NS_ALGSUPPORT = "urn:oasis:names:tc:SAML:metadata:algsupport"


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Endpoint:
    binding: str
    location: str
    index: int | None
    is_default: bool


@dataclass(frozen=True)
class ServiceProviderMetadata:
    entity_id: str
    acs_endpoints: tuple[Endpoint, ...]
    signing_certificates: tuple[x509.Certificate, ...]
    encryption_certificates: tuple[x509.Certificate, ...]
    authn_requests_signed: bool
    want_assertions_signed: bool
    name_id_formats: tuple[str, ...]
    valid_until: datetime | None
    raw: bytes
    #: ``alg:SigningMethod Algorithm`` URIs the SP advertises (SAML metadata algorithm-support profile), in
    #: document order: the EntityDescriptor's md:Extensions, then the SPSSODescriptor's. Empty: none advertised.
    signing_methods: tuple[str, ...] = ()

    @property
    def acs_locations(self) -> tuple[str, ...]:
        return tuple(e.location for e in self.acs_endpoints)

    @property
    def post_acs_endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.acs_endpoints if e.binding == BINDING_POST)

    def default_acs(self) -> Endpoint:
        """The HTTP-POST ACS marked isDefault, else the first HTTP-POST ACS (metadata spec §2.2.3)."""
        posts = self.post_acs_endpoints
        if not posts:
            raise MetadataError(f"SP {self.entity_id} lists no HTTP-POST AssertionConsumerService "
                                f"(listed: {', '.join(self.acs_locations) or 'none'})", code="metadata_no_acs")
        return next((e for e in posts if e.is_default), posts[0])


@dataclass(frozen=True)
class Organization:
    name: str
    display_name: str
    url: str
    lang: str = "en"


# --------------------------------------------------------------------------- parsing helpers

def parse_xs_boolean(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    value = text.strip()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError(f"not an xs:boolean: {text!r}")


def _md_error(message: str, code: str) -> MetadataError:
    return MetadataError(message, code=code)


def _load_certificate(text: str, entity_id: str) -> x509.Certificate:
    try:
        return load_certificate_b64(text)
    except ValueError as exc:
        raise _md_error(f"SP {entity_id}: an X509Certificate in a KeyDescriptor is not a base64 DER "
                        f"certificate: {exc}", "metadata_bad_certificate") from exc


def _certificates(descriptor: etree._Element, use: str, entity_id: str) -> tuple[x509.Certificate, ...]:
    certs: list[x509.Certificate] = []
    seen: set[bytes] = set()
    for kd in descriptor.findall(qname(NS_MD, "KeyDescriptor")):
        if kd.get("use") not in (None, use):
            continue
        for el in kd.iterfind(f"{{{NS_DS}}}KeyInfo/{{{NS_DS}}}X509Data/{{{NS_DS}}}X509Certificate"):
            cert = _load_certificate(el.text or "", entity_id)
            der = cert.public_bytes(Encoding.DER)
            if der not in seen:
                seen.add(der)
                certs.append(cert)
    return tuple(certs)


def _find_sp_entity(root: etree._Element) -> etree._Element:
    if root.tag == qname(NS_MD, "EntityDescriptor"):
        return root
    if root.tag != qname(NS_MD, "EntitiesDescriptor"):
        raise _md_error(f"metadata root is {root.tag}; expected md:EntityDescriptor or md:EntitiesDescriptor",
                        "metadata_bad_root")
    entities = list(root.iter(qname(NS_MD, "EntityDescriptor")))
    sps = [e for e in entities if e.find(qname(NS_MD, "SPSSODescriptor")) is not None]
    if len(sps) == 1:
        return sps[0]
    if not sps:
        names = ", ".join(str(e.get("entityID")) for e in entities) or "none"
        raise _md_error(f"EntitiesDescriptor holds no entity with an SPSSODescriptor (entities: {names})",
                        "metadata_no_sp_descriptor")
    names = ", ".join(str(e.get("entityID")) for e in sps)
    raise _md_error(f"EntitiesDescriptor holds {len(sps)} SPs ({names}); configure one SP per metadata "
                    "document", "metadata_ambiguous")


def _valid_until(elements: Sequence[etree._Element]) -> datetime | None:
    values: list[datetime] = []
    for el in elements:
        text = el.get("validUntil")
        if text is None:
            continue
        try:
            values.append(parse_xs_datetime(text))
        except ValueError as exc:
            raise _md_error(f"validUntil {text!r} is not an xs:dateTime", "metadata_malformed") from exc
    return min(values) if values else None


def _signing_methods(elements: Sequence[etree._Element]) -> tuple[str, ...]:
    """``alg:SigningMethod/@Algorithm`` under each element's own md:Extensions (duplicates dropped)."""
    methods: list[str] = []
    for el in elements:
        for ext in el.findall(qname(NS_MD, "Extensions")):
            for method in ext.findall(qname(NS_ALGSUPPORT, "SigningMethod")):
                uri = (method.get("Algorithm") or "").strip()
                if uri and uri not in methods:
                    methods.append(uri)
    return tuple(methods)


def parse_sp_metadata(xml: bytes) -> ServiceProviderMetadata:
    """Read SP metadata (EntityDescriptor, or EntitiesDescriptor holding exactly one SP)."""
    root = parse_untrusted(xml, what="SP metadata", error=MetadataError)
    entity = _find_sp_entity(root)
    entity_id = (entity.get("entityID") or "").strip()
    if not entity_id:
        raise _md_error("EntityDescriptor has no entityID", "metadata_no_entity_id")

    descriptors = [d for d in entity.findall(qname(NS_MD, "SPSSODescriptor"))
                   if PROTOCOL_SAML2 in (d.get("protocolSupportEnumeration") or "").split()]
    if not descriptors:
        raise _md_error(f"entity {entity_id} has no SPSSODescriptor supporting {PROTOCOL_SAML2}",
                        "metadata_no_sp_descriptor")
    if len(descriptors) > 1:
        raise _md_error(f"entity {entity_id} has {len(descriptors)} SAML 2.0 SPSSODescriptors; expected one",
                        "metadata_ambiguous")
    sp = descriptors[0]

    endpoints: list[Endpoint] = []
    for el in sp.findall(qname(NS_MD, "AssertionConsumerService")):
        binding, location = el.get("Binding"), el.get("Location")
        if not binding or not location:
            raise _md_error(f"SP {entity_id}: an AssertionConsumerService lacks Binding or Location",
                            "metadata_malformed")
        try:
            index_text = el.get("index")
            index = int(index_text) if index_text is not None else None
            is_default = parse_xs_boolean(el.get("isDefault"), False)
        except ValueError as exc:
            raise _md_error(f"SP {entity_id}: AssertionConsumerService {location}: bad index/isDefault ({exc})",
                            "metadata_malformed") from exc
        endpoints.append(Endpoint(binding.strip(), location.strip(), index, is_default))
    if not any(e.binding == BINDING_POST for e in endpoints):
        listed = ", ".join(f"{e.location} ({e.binding})" for e in endpoints) or "none"
        raise _md_error(f"SP {entity_id} has no HTTP-POST AssertionConsumerService (listed: {listed})",
                        "metadata_no_acs")

    try:
        authn_requests_signed = parse_xs_boolean(sp.get("AuthnRequestsSigned"), False)
        want_assertions_signed = parse_xs_boolean(sp.get("WantAssertionsSigned"), False)
    except ValueError as exc:
        raise _md_error(f"SP {entity_id}: {exc}", "metadata_malformed") from exc

    parents = [entity, *(a for a in entity.iterancestors() if a.tag == qname(NS_MD, "EntitiesDescriptor"))]
    return ServiceProviderMetadata(
        entity_id=entity_id,
        acs_endpoints=tuple(endpoints),
        signing_certificates=_certificates(sp, "signing", entity_id),
        encryption_certificates=_certificates(sp, "encryption", entity_id),
        authn_requests_signed=authn_requests_signed,
        want_assertions_signed=want_assertions_signed,
        name_id_formats=tuple((el.text or "").strip() for el in sp.findall(qname(NS_MD, "NameIDFormat"))),
        valid_until=_valid_until([*parents, sp]),
        raw=xml,
        signing_methods=_signing_methods([entity, sp]),
    )


# --------------------------------------------------------------------------- writing


def format_xs_datetime(value: datetime) -> str:
    """validUntil as written in metadata (the microseconds that are there); a naive time is a MetadataError."""
    try:
        return time.format_xs_datetime(value, "auto")
    except time.NaiveTimeError as exc:
        raise MetadataError(f"datetime {value.isoformat()} has no time zone; SAML times must be UTC",
                          code="naive_datetime") from exc


def format_xs_duration(value: timedelta) -> str:
    """Shortest whole-unit xs:duration: P7D, PT24H is written P1D, PT90M, PT45S."""
    micros = value // timedelta(microseconds=1)
    if micros <= 0:
        raise MetadataError(f"cacheDuration must be positive, got {value}", code="bad_duration")
    seconds, frac = divmod(micros, 1_000_000)
    if frac:
        return f"PT{seconds}.{frac:06d}".rstrip("0") + "S"
    for unit, size in (("D", 86400), ("H", 3600), ("M", 60)):
        if seconds % size == 0:
            return f"P{seconds // size}D" if unit == "D" else f"PT{seconds // size}{unit}"
    return f"PT{seconds}S"


def _cert_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")


def _key_descriptor(parent: etree._Element, cert: x509.Certificate, use: str) -> None:
    kd = etree.SubElement(parent, qname(NS_MD, "KeyDescriptor"), use=use)
    key_info = etree.SubElement(kd, qname(NS_DS, "KeyInfo"))
    x509_data = etree.SubElement(key_info, qname(NS_DS, "X509Data"))
    etree.SubElement(x509_data, qname(NS_DS, "X509Certificate")).text = _cert_b64(cert)


def _serialize(root: etree._Element) -> bytes:
    body: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False, pretty_print=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _check_signing_certificates(certificates: Sequence[x509.Certificate]) -> None:
    if not certificates:
        raise MetadataError("IdP metadata needs at least one signing certificate", code="no_certificate")
    seen: set[str] = set()
    for cert in certificates:
        fp = fingerprint(cert)
        if fp in seen:
            raise MetadataError(f"certificate {fp} is listed twice", code="duplicate_certificate")
        seen.add(fp)
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
            raise MetadataError(f"certificate {fp} has an RSA-{key.key_size} key; Huawei requires at least "
                              f"RSA-{_MIN_RSA_BITS}", code="key_too_small")


def build_idp_metadata(*, entity_id: str, sso_url: str, certificates: Sequence[x509.Certificate],
                       valid_until: datetime, cache_duration: timedelta, post_binding: bool = True,
                       name_id_formats: Sequence[str] = (NAMEID_TRANSIENT,),
                       organization: Organization | None = None) -> bytes:
    """Our IdP metadata, as uploaded to Huawei Partner Center. Deterministic bytes; public keys only.

    One ``KeyDescriptor use="signing"`` per certificate: list the current key and, during a
    rotation, the next one, so Huawei trusts both before the switch.
    """
    if not entity_id or not sso_url:
        raise MetadataError("entity_id and sso_url are required for IdP metadata", code="metadata_incomplete")
    _check_signing_certificates(certificates)
    root = etree.Element(qname(NS_MD, "EntityDescriptor"), nsmap={"md": NS_MD, "ds": NS_DS})
    root.set("entityID", entity_id)
    root.set("validUntil", format_xs_datetime(valid_until))
    root.set("cacheDuration", format_xs_duration(cache_duration))

    idp = etree.SubElement(root, qname(NS_MD, "IDPSSODescriptor"))
    idp.set("WantAuthnRequestsSigned", "true")
    idp.set("protocolSupportEnumeration", PROTOCOL_SAML2)
    # Schema order: KeyDescriptor*, (Organization?, ContactPerson*), NameIDFormat*, SingleSignOnService+
    for cert in certificates:
        _key_descriptor(idp, cert, "signing")
    for fmt in name_id_formats:
        etree.SubElement(idp, qname(NS_MD, "NameIDFormat")).text = fmt
    etree.SubElement(idp, qname(NS_MD, "SingleSignOnService"), Binding=BINDING_REDIRECT, Location=sso_url)
    if post_binding:
        etree.SubElement(idp, qname(NS_MD, "SingleSignOnService"), Binding=BINDING_POST, Location=sso_url)

    if organization is not None:
        org = etree.SubElement(root, qname(NS_MD, "Organization"))
        for tag, text in (("OrganizationName", organization.name),
                          ("OrganizationDisplayName", organization.display_name),
                          ("OrganizationURL", organization.url)):
            el = etree.SubElement(org, qname(NS_MD, tag))
            el.set(_XML_LANG, organization.lang)
            el.text = text

    out = _serialize(root)
    if len(out) > MAX_XML_BYTES:
        raise MetadataError(f"IdP metadata is {len(out)} bytes; Huawei accepts at most {MAX_XML_BYTES}",
                          code="metadata_too_large")
    return out


def build_sp_metadata(*, entity_id: str, acs_url: str, certificate: x509.Certificate,
                      authn_requests_signed: bool = True, want_assertions_signed: bool = True,
                      signing_methods: Sequence[str] = ()) -> bytes:
    """SP metadata shaped like Huawei IAM's (for our Huawei IAM simulator and tests). ``signing_methods``:
    algorithm URIs to advertise as ``alg:SigningMethod`` in the EntityDescriptor's md:Extensions."""
    nsmap = {"md": NS_MD, "ds": NS_DS, **({"alg": NS_ALGSUPPORT} if signing_methods else {})}
    root = etree.Element(qname(NS_MD, "EntityDescriptor"), nsmap=nsmap)
    root.set("entityID", entity_id)
    if signing_methods:
        ext = etree.SubElement(root, qname(NS_MD, "Extensions"))
        for uri in signing_methods:
            etree.SubElement(ext, qname(NS_ALGSUPPORT, "SigningMethod"), Algorithm=uri)
    sp = etree.SubElement(root, qname(NS_MD, "SPSSODescriptor"))
    sp.set("AuthnRequestsSigned", "true" if authn_requests_signed else "false")
    sp.set("WantAssertionsSigned", "true" if want_assertions_signed else "false")
    sp.set("protocolSupportEnumeration", PROTOCOL_SAML2)
    _key_descriptor(sp, certificate, "signing")
    _key_descriptor(sp, certificate, "encryption")
    etree.SubElement(sp, qname(NS_MD, "NameIDFormat")).text = NAMEID_TRANSIENT
    etree.SubElement(sp, qname(NS_MD, "AssertionConsumerService"), Binding=BINDING_POST, Location=acs_url,
                     index="0", isDefault="true")
    return _serialize(root)


def metadata_etag(xml: bytes) -> str:
    """Strong ETag (quoted SHA-256 hex) for serving metadata."""
    return '"' + hashlib.sha256(xml).hexdigest() + '"'
