"""Build the SAML Response (with its Assertion) that we POST to the SP's ACS URL.

The Assertion is written as text, every value escaped, directly in its exclusive-C14N form, so
its enveloped signature is computed over that text without parsing it
(:func:`idp_bridge.saml.signing.enveloped_signature_xml`). When the Response is signed too, the
finished document is parsed once and signed in place by
:func:`idp_bridge.saml.signing.sign_enveloped`. Both are several times cheaper than building
thirty elements through lxml's Python API: signing must cost little more than the RSA operation
(see bench/bench_signing.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lxml import etree

from idp_bridge.saml.errors import SamlError
from idp_bridge.saml.signing import Signer, enveloped_signature_xml, inclusive_namespaces_xml, sign_enveloped
from idp_bridge.saml.time import NaiveTimeError, format_xs_datetime
from idp_bridge.saml.xml import (
    ATTRNAME_URI,
    AUTHN_PASSWORD_PROTECTED,
    CM_BEARER,
    NAMEID_TRANSIENT,
    NS_SAML,
    NS_SAMLP,
    NS_XS,
    NS_XSI,
    STATUS_SUCCESS,
)

STATUS_REQUESTER = "urn:oasis:names:tc:SAML:2.0:status:Requester"
STATUS_RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
STATUS_AUTHN_FAILED = "urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"
STATUS_NO_PASSIVE = "urn:oasis:names:tc:SAML:2.0:status:NoPassive"


class ResponseBuildError(SamlError):
    """A value we were asked to put in a Response cannot be represented (or is missing)."""

    code = "response_invalid"
    status = 500


def new_id() -> str:
    """A SAML ID: '_' followed by 32 random hex digits (128 bits)."""
    return "_" + secrets.token_hex(16)


def saml_time(moment: datetime) -> str:
    """xs:dateTime in UTC with whole seconds, e.g. 2024-05-01T12:00:00Z. Naive datetimes are refused."""
    try:
        return format_xs_datetime(moment)
    except NaiveTimeError as exc:
        raise ResponseBuildError(str(exc), code="response_naive_time") from exc


# Characters XML 1.0 cannot carry at all; and anything that is either that or needs escaping
# (one regex search decides the common case: nothing to do).
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPECIAL = re.compile('[\x00-\x1f&<>"\ud800-\udfff\ufffe\uffff]')


def _check_chars(value: str, what: str) -> None:
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise ResponseBuildError(f"{what} contains the character U+{ord(bad.group()):04X}, which XML 1.0 "
                                 "cannot carry", code="response_bad_character")


def _text(value: str, what: str) -> str:
    if _SPECIAL.search(value) is None:
        return value
    _check_chars(value, what)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")


def _attr(value: str, what: str) -> str:
    if _SPECIAL.search(value) is None:
        return value
    _check_chars(value, what)
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
            .replace("\t", "&#x9;").replace("\n", "&#xA;").replace("\r", "&#xD;"))


@dataclass(frozen=True)
class AssertionSpec:
    """Everything that goes into one successful Response. Times are aware datetimes."""

    issuer: str
    destination: str
    audience: str
    in_response_to: str | None
    name_id: str
    now: datetime
    session_index: str
    authn_instant: datetime
    name_id_format: str = NAMEID_TRANSIENT
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    lifetime: timedelta = timedelta(minutes=5)
    not_before_skew: timedelta = timedelta(minutes=2)
    authn_context: str = AUTHN_PASSWORD_PROTECTED
    sp_name_qualifier: str | None = None
    response_id: str = field(default_factory=new_id)
    assertion_id: str = field(default_factory=new_id)


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_blank_text=False)


def _canonical_assertion(spec: AssertionSpec) -> str:
    """The unsigned Assertion, written directly in its exclusive-C14N form.

    Exc-c14n of the Assertion is exactly what the enveloped signature's digest covers, so writing
    the Assertion in that form lets us hash this text as it is: no parse, no canonicalisation
    pass, no re-serialisation (about half of the non-RSA cost of a response). The rules this
    text follows (tests/test_responses.py checks it against lxml's exc-c14n byte for byte):
    start/end tag pairs, never ``<x/>``; ``saml``, ``xs`` and ``xsi`` all declared on the Assertion
    (sorted by prefix), so the signed Assertion is schema-valid on its own: ``xs`` appears only inside
    the ``xsi:type`` values, so the Reference names ``xs xsi`` in its InclusiveNamespaces PrefixList
    (exc-c14n then renders both on the Assertion, the apex, and never again below it), which also puts
    the binding of ``xs`` under the signature; attributes in sorted order; c14n escaping of text and
    attribute values.
    """
    for name in ("issuer", "destination", "audience", "name_id", "session_index"):
        if not getattr(spec, name):
            raise ResponseBuildError(f"cannot build a Response without {name}", code="response_missing_value")
    if spec.lifetime <= timedelta(0) or spec.not_before_skew < timedelta(0):
        raise ResponseBuildError(f"lifetime {spec.lifetime} must be positive and skew {spec.not_before_skew} "
                                 "not negative", code="response_bad_lifetime")
    now = saml_time(spec.now)
    not_on_or_after = saml_time(spec.now + spec.lifetime)
    irt = f' InResponseTo="{_attr(spec.in_response_to, "InResponseTo")}"' if spec.in_response_to else ""
    spnq = (f' SPNameQualifier="{_attr(spec.sp_name_qualifier, "SPNameQualifier")}"'
            if spec.sp_name_qualifier else "")
    parts = [
        f'<saml:Assertion xmlns:saml="{NS_SAML}" xmlns:xs="{NS_XS}" xmlns:xsi="{NS_XSI}" '
        f'ID="{_attr(spec.assertion_id, "Assertion ID")}" '
        f'IssueInstant="{now}" Version="2.0">',
        f'<saml:Issuer>{_text(spec.issuer, "issuer")}</saml:Issuer>',
        "<saml:Subject>",
        f'<saml:NameID Format="{_attr(spec.name_id_format, "NameID Format")}"{spnq}>'
        f'{_text(spec.name_id, "NameID")}</saml:NameID>',
        f'<saml:SubjectConfirmation Method="{CM_BEARER}">'
        f'<saml:SubjectConfirmationData{irt} NotOnOrAfter="{not_on_or_after}" '
        f'Recipient="{_attr(spec.destination, "destination")}"></saml:SubjectConfirmationData>'
        "</saml:SubjectConfirmation>",
        "</saml:Subject>",
        f'<saml:Conditions NotBefore="{saml_time(spec.now - spec.not_before_skew)}" '
        f'NotOnOrAfter="{not_on_or_after}">'
        f'<saml:AudienceRestriction><saml:Audience>{_text(spec.audience, "audience")}</saml:Audience>'
        "</saml:AudienceRestriction></saml:Conditions>",
        f'<saml:AuthnStatement AuthnInstant="{saml_time(spec.authn_instant)}" '
        f'SessionIndex="{_attr(spec.session_index, "SessionIndex")}">'
        f'<saml:AuthnContext><saml:AuthnContextClassRef>{_text(spec.authn_context, "AuthnContextClassRef")}'
        "</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>",
    ]
    if spec.attributes:
        parts.append("<saml:AttributeStatement>")
        for name, values in spec.attributes.items():
            if isinstance(values, str):
                raise ResponseBuildError(f"attribute {name!r} must be a sequence of strings, not a string",
                                         code="response_bad_attribute")
            parts.append(f'<saml:Attribute Name="{_attr(name, "attribute name")}" NameFormat="{ATTRNAME_URI}">')
            for value in values:
                parts.append('<saml:AttributeValue xsi:type="xs:string">'
                             f'{_text(value, "attribute value")}</saml:AttributeValue>')
            parts.append("</saml:Attribute>")
        parts.append("</saml:AttributeStatement>")
    parts.append("</saml:Assertion>")
    return "".join(parts)


def _response_open(response_id: str, now: datetime, destination: str, in_response_to: str | None) -> str:
    irt = f' InResponseTo="{_attr(in_response_to, "InResponseTo")}"' if in_response_to else ""
    return (f'<samlp:Response xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" '
            f'ID="{_attr(response_id, "Response ID")}" Version="2.0" IssueInstant="{saml_time(now)}" '
            f'Destination="{_attr(destination, "destination")}"{irt}>')


_ISSUER_END = "</saml:Issuer>"
#: Namespaces the Assertion uses only inside values (``xsi:type="xs:string"``) or declares for them.
ASSERTION_INCLUSIVE_PREFIXES = ("xs", "xsi")
_ASSERTION_INCLUSIVE = inclusive_namespaces_xml(" ".join(ASSERTION_INCLUSIVE_PREFIXES))


def render_response(spec: AssertionSpec, signer: Signer, *, sign_assertion: bool = True,
                    sign_response: bool = False) -> bytes:
    """Serialize ``spec`` as a signed samlp:Response (UTF-8, no XML declaration)."""
    assertion = _canonical_assertion(spec)
    if sign_assertion:
        signature = enveloped_signature_xml(assertion.encode("utf-8"), spec.assertion_id, signer,
                                            inclusive=_ASSERTION_INCLUSIVE)
        cut = assertion.index(_ISSUER_END) + len(_ISSUER_END)
        assertion = assertion[:cut] + signature + assertion[cut:]
    document = "".join((
        _response_open(spec.response_id, spec.now, spec.destination, spec.in_response_to),
        f'<saml:Issuer>{_text(spec.issuer, "issuer")}</saml:Issuer>',
        f'<samlp:Status><samlp:StatusCode Value="{STATUS_SUCCESS}"/></samlp:Status>',
        assertion,
        "</samlp:Response>",
    )).encode("utf-8")
    if not sign_response:
        return document
    root = etree.fromstring(document, parser=_PARSER)
    sign_enveloped(root, signer, inclusive_prefixes=ASSERTION_INCLUSIVE_PREFIXES)
    serialized: bytes = etree.tostring(root, encoding="UTF-8")
    return serialized


def build_response(*, issuer: str, destination: str, audience: str, in_response_to: str | None,
                   name_id: str, name_id_format: str, attributes: Mapping[str, Sequence[str]],
                   now: datetime, lifetime: timedelta, not_before_skew: timedelta, session_index: str,
                   authn_instant: datetime, authn_context: str, signer: Signer,
                   sign_assertion: bool = True, sign_response: bool = False,
                   sp_name_qualifier: str | None = None) -> bytes:
    """Build and sign a successful Response carrying one bearer Assertion (shared spec §4)."""
    spec = AssertionSpec(
        issuer=issuer, destination=destination, audience=audience, in_response_to=in_response_to,
        name_id=name_id, name_id_format=name_id_format, attributes=attributes, now=now, lifetime=lifetime,
        not_before_skew=not_before_skew, session_index=session_index, authn_instant=authn_instant,
        authn_context=authn_context, sp_name_qualifier=sp_name_qualifier,
    )
    return render_response(spec, signer, sign_assertion=sign_assertion, sign_response=sign_response)


def build_error_response(*, issuer: str, destination: str, in_response_to: str | None, now: datetime,
                         status: str = STATUS_RESPONDER, sub_status: str | None = STATUS_AUTHN_FAILED,
                         message: str | None = None, signer: Signer | None = None) -> bytes:
    """A Response without an Assertion whose Status is not Success (e.g. Responder/AuthnFailed).

    Signed (enveloped, on the Response) when ``signer`` is given.
    """
    if status == STATUS_SUCCESS:
        raise ResponseBuildError("an error Response cannot carry the Success status; use build_response",
                                 code="response_bad_status")
    sub = f'<samlp:StatusCode Value="{_attr(sub_status, "sub-status")}"/>' if sub_status else ""
    msg = f"<samlp:StatusMessage>{_text(message, 'StatusMessage')}</samlp:StatusMessage>" if message else ""
    xml = (
        _response_open(new_id(), now, destination, in_response_to)
        + f'<saml:Issuer>{_text(issuer, "issuer")}</saml:Issuer>'
        f'<samlp:Status><samlp:StatusCode Value="{_attr(status, "status")}">{sub}</samlp:StatusCode>{msg}'
        "</samlp:Status></samlp:Response>"
    )
    root = etree.fromstring(xml.encode("utf-8"), parser=_PARSER)
    if signer is not None:
        sign_enveloped(root, signer)
    serialized: bytes = etree.tostring(root, encoding="UTF-8")
    return serialized
