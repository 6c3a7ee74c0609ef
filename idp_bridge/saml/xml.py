"""Namespaces and the one safe XML parser the bridge uses for anything a peer sent.

lxml is configured to refuse DTDs, entities, network access and huge trees. A document
that carries a DOCTYPE at all is refused before it is parsed into a tree.
"""

from __future__ import annotations

import re

from lxml import etree

from idp_bridge.saml.errors import RequestError

NS_SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
NS_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
NS_MD = "urn:oasis:names:tc:SAML:2.0:metadata"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"
NS_XS = "http://www.w3.org/2001/XMLSchema"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"

NSMAP = {"samlp": NS_SAMLP, "saml": NS_SAML, "md": NS_MD, "ds": NS_DS}

BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
ATTRNAME_URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
AUTHN_PASSWORD_PROTECTED = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"  # noqa: S105
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_INVALID_NAMEID_POLICY = "urn:oasis:names:tc:SAML:2.0:status:InvalidNameIDPolicy"

#: Documents larger than this are refused before parsing (metadata may be up to 2 MB per Huawei).
MAX_XML_BYTES = 2 * 1024 * 1024

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    dtd_validation=False,
    load_dtd=False,
    huge_tree=False,
    remove_comments=False,
    remove_pis=False,
)


_DOCTYPE = re.compile(rb"<!doctype", re.IGNORECASE)
_ENTITY = re.compile(rb"<!entity", re.IGNORECASE)


def parse_untrusted(data: bytes, *, what: str = "XML document", max_bytes: int = MAX_XML_BYTES,
                    error: type[Exception] = RequestError) -> etree._Element:
    """Parse bytes a peer sent. Refuses DOCTYPE/ENTITY declarations and oversize input.

    ``error`` is the exception class raised (a ``SamlError`` subclass taking the operator
    message as its only positional argument).
    """
    if len(data) > max_bytes:
        raise error(f"{what} is {len(data)} bytes; the limit is {max_bytes}", code="xml_too_large")  # type: ignore[call-arg]
    # Case-insensitive searches instead of .lower(), which copied the whole input (bytes patterns fold
    # ASCII only, as bytes.lower() does); a DOCTYPE is looked for in the first 4096 bytes, as before.
    if _DOCTYPE.search(data, 0, 4096) or _ENTITY.search(data):
        raise error(f"{what} contains a DOCTYPE or ENTITY declaration; DTDs are never accepted",
                    code="xml_dtd_forbidden")  # type: ignore[call-arg]
    try:
        root = etree.fromstring(data, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        raise error(f"{what} is not well-formed XML: {exc}", code="xml_malformed") from exc  # type: ignore[call-arg]
    if root.getroottree().docinfo.doctype:
        raise error(f"{what} contains a DOCTYPE; DTDs are never accepted",
                    code="xml_dtd_forbidden")  # type: ignore[call-arg]
    return root


def qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"
