"""Build the SAML Response (with its Assertion) that we POST to the SP's ACS URL.

The document is written from a template with every value escaped, parsed once by lxml, and
signed in place by :func:`idp_bridge.saml.signing.sign_enveloped` (Assertion first, then the
Response when asked). Writing text and parsing it once is several times cheaper than creating
thirty elements one by one through lxml's Python API, and signing must cost little more than
the RSA operation (see bench/bench_signing.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lxml import etree

from .errors import BridgeError
from .signing import Signer, sign_enveloped
from .xml import (
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
STATUS_REQUEST_DENIED = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"


class ResponseBuildError(BridgeError):
    """A value we were asked to put in a Response cannot be represented (or is missing)."""

    code = "response_invalid"
    status = 500


def new_id() -> str:
    """A SAML ID: '_' followed by 32 random hex digits (128 bits)."""
    return "_" + secrets.token_hex(16)


def saml_time(moment: datetime) -> str:
    """xs:dateTime in UTC with whole seconds, e.g. 2024-05-01T12:00:00Z. Naive datetimes are refused."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ResponseBuildError(f"time {moment.isoformat()} has no time zone; pass an aware UTC datetime",
                                 code="response_naive_time")
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


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


def _render(spec: AssertionSpec) -> str:
    for name in ("issuer", "destination", "audience", "name_id", "session_index"):
        if not getattr(spec, name):
            raise ResponseBuildError(f"cannot build a Response without {name}", code="response_missing_value")
    if spec.lifetime <= timedelta(0) or spec.not_before_skew < timedelta(0):
        raise ResponseBuildError(f"lifetime {spec.lifetime} must be positive and skew {spec.not_before_skew} "
                                 "not negative", code="response_bad_lifetime")
    now = saml_time(spec.now)
    not_on_or_after = saml_time(spec.now + spec.lifetime)
    not_before = saml_time(spec.now - spec.not_before_skew)
    irt = f' InResponseTo="{_attr(spec.in_response_to, "InResponseTo")}"' if spec.in_response_to else ""
    issuer = _text(spec.issuer, "issuer")
    destination = _attr(spec.destination, "destination")
    spnq = (f' SPNameQualifier="{_attr(spec.sp_name_qualifier, "SPNameQualifier")}"'
            if spec.sp_name_qualifier else "")
    parts = [
        f'<samlp:Response xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" ID="{_attr(spec.response_id, "Response ID")}" '
        f'Version="2.0" IssueInstant="{now}" Destination="{destination}"{irt}>',
        f"<saml:Issuer>{issuer}</saml:Issuer>",
        f'<samlp:Status><samlp:StatusCode Value="{STATUS_SUCCESS}"/></samlp:Status>',
        f'<saml:Assertion xmlns:xs="{NS_XS}" xmlns:xsi="{NS_XSI}" ID="{_attr(spec.assertion_id, "Assertion ID")}" '
        f'IssueInstant="{now}" Version="2.0">',
        f"<saml:Issuer>{issuer}</saml:Issuer>",
        "<saml:Subject>",
        f'<saml:NameID Format="{_attr(spec.name_id_format, "NameID Format")}"{spnq}>'
        f'{_text(spec.name_id, "NameID")}</saml:NameID>',
        f'<saml:SubjectConfirmation Method="{CM_BEARER}">'
        f'<saml:SubjectConfirmationData{irt} NotOnOrAfter="{not_on_or_after}" Recipient="{destination}"/>'
        "</saml:SubjectConfirmation>",
        "</saml:Subject>",
        f'<saml:Conditions NotBefore="{not_before}" NotOnOrAfter="{not_on_or_after}">'
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
                parts.append(f'<saml:AttributeValue xsi:type="xs:string">{_text(value, f"attribute {name}")}'
                             "</saml:AttributeValue>")
            parts.append("</saml:Attribute>")
        parts.append("</saml:AttributeStatement>")
    parts.append("</saml:Assertion></samlp:Response>")
    return "".join(parts)


def render_response(spec: AssertionSpec, signer: Signer, *, sign_assertion: bool = True,
                    sign_response: bool = False) -> bytes:
    """Serialize ``spec`` as a signed samlp:Response (UTF-8, no XML declaration)."""
    root = etree.fromstring(_render(spec).encode("utf-8"), parser=_PARSER)
    if sign_assertion:
        sign_enveloped(root[2], signer)
    if sign_response:
        sign_enveloped(root, signer)
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
    irt = f' InResponseTo="{_attr(in_response_to, "InResponseTo")}"' if in_response_to else ""
    sub = f'<samlp:StatusCode Value="{_attr(sub_status, "sub-status")}"/>' if sub_status else ""
    msg = f"<samlp:StatusMessage>{_text(message, 'StatusMessage')}</samlp:StatusMessage>" if message else ""
    xml = (
        f'<samlp:Response xmlns:samlp="{NS_SAMLP}" xmlns:saml="{NS_SAML}" ID="{new_id()}" Version="2.0" '
        f'IssueInstant="{saml_time(now)}" Destination="{_attr(destination, "destination")}"{irt}>'
        f'<saml:Issuer>{_text(issuer, "issuer")}</saml:Issuer>'
        f'<samlp:Status><samlp:StatusCode Value="{_attr(status, "status")}">{sub}</samlp:StatusCode>{msg}'
        "</samlp:Status></samlp:Response>"
    )
    root = etree.fromstring(xml.encode("utf-8"), parser=_PARSER)
    if signer is not None:
        sign_enveloped(root, signer)
    serialized: bytes = etree.tostring(root, encoding="UTF-8")
    return serialized
