"""Build an AuthnRequest the way Huawei IAM does: the SP's side, for the simulator, the tests and the benchmarks."""

from __future__ import annotations

import secrets
import string
from datetime import datetime

from lxml import etree

from idp_bridge.saml.time import format_xs_datetime
from idp_bridge.saml.xml import BINDING_POST, NAMEID_TRANSIENT, NS_SAML, NS_SAMLP, qname

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
