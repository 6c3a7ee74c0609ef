"""SAML Responses we build, judged by xmlsec1, python3-saml (strict) and the OASIS schemas."""

from __future__ import annotations

import base64
import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onelogin.saml2
import pytest
from lxml import etree
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings

from idp_bridge.errors import SignatureError
from idp_bridge.saml import algorithms
from idp_bridge.saml.responses import (
    ASSERTION_INCLUSIVE_PREFIXES,
    STATUS_AUTHN_FAILED,
    STATUS_RESPONDER,
    AssertionSpec,
    ResponseBuildError,
    _canonical_assertion,
    build_error_response,
    build_response,
    render_response,
    saml_time,
)
from idp_bridge.saml.signing import PrivateKeySigner, verify_enveloped
from idp_bridge.saml.xml import AUTHN_PASSWORD_PROTECTED, NAMEID_TRANSIENT, NS_DS, NS_SAML, NS_SAMLP
from tests.pki import cached_key, make_key

if TYPE_CHECKING:
    from tests.pki import TestKey

IDP = "https://partner.example.com/saml/idp"
SP = "https://auth.huaweicloud.com/"
ACS = "https://auth.huaweicloud.com/authui/saml/SAMLAssertionConsumer"
REQUEST_ID = "_req0123456789abcdef"
SAML = f"{{{NS_SAML}}}"
SAMLP = f"{{{NS_SAMLP}}}"
DS = f"{{{NS_DS}}}"
SCHEMAS = Path(onelogin.saml2.__file__).parent / "schemas"
ATTRIBUTES = {
    "xUserId": ["cust-0001"],
    "xAccountId": ["cust-0001"],
    "bpId": ["partner-42"],
    "email": ["zhang.san@example.com"],
    "name": ["张三 & <Co> \"quoted\" 'x'\ttab\r\nline"],
    "mobile": ["0086-13800000000"],
}


@pytest.fixture(scope="module")
def ec_key() -> TestKey:
    return make_key("idp-ec", curve=True)


def _key(name: str, ec_key: TestKey) -> TestKey:
    return {"rsa2048": cached_key("idp"), "rsa3072": cached_key("idp3072", 3072), "p256": ec_key}[name]


def _build(key: TestKey, *, sign_response: bool = False, sign_assertion: bool = True,
           attributes: dict[str, list[str]] | None = None, now: dt.datetime | None = None) -> bytes:
    now = now or dt.datetime.now(dt.UTC)
    return build_response(
        issuer=IDP, destination=ACS, audience=SP, in_response_to=REQUEST_ID, name_id="_" + "ab" * 16,
        name_id_format=NAMEID_TRANSIENT, attributes=ATTRIBUTES if attributes is None else attributes, now=now,
        lifetime=dt.timedelta(minutes=5), not_before_skew=dt.timedelta(minutes=2), session_index="_sess1",
        authn_instant=now - dt.timedelta(seconds=30), authn_context=AUTHN_PASSWORD_PROTECTED,
        signer=PrivateKeySigner(key.private_key, key.certificate), sign_assertion=sign_assertion,
        sign_response=sign_response, sp_name_qualifier=SP,
    )


def _ids(xml: bytes) -> tuple[str, str]:
    root = etree.fromstring(xml)
    assertion = root.find(SAML + "Assertion")
    assert assertion is not None
    return root.get("ID") or "", assertion.get("ID") or ""


def _xmlsec1(xml: bytes, cert_pem: bytes, tmp_path: Path, node_id: str) -> bool:
    (tmp_path / "resp.xml").write_bytes(xml)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    result = subprocess.run(
        ["xmlsec1", "--verify", "--pubkey-cert-pem", str(tmp_path / "cert.pem"),
         "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
         "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response",
         "--node-id", node_id, str(tmp_path / "resp.xml")],
        capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and "OK" in (result.stdout + result.stderr).splitlines()


def _onelogin(xml: bytes, cert: TestKey, *, want_messages_signed: bool = False) -> OneLogin_Saml2_Response:
    settings = OneLogin_Saml2_Settings({
        "strict": True,
        "debug": False,
        "sp": {
            "entityId": SP,
            "assertionConsumerService": {"url": ACS, "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
            "NameIDFormat": NAMEID_TRANSIENT,
        },
        "idp": {
            "entityId": IDP,
            "singleSignOnService": {"url": "https://partner.example.com/saml/sso",
                                    "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
            "x509cert": cert.cert_b64,
        },
        "security": {
            "wantAssertionsSigned": True,
            "wantMessagesSigned": want_messages_signed,
            "rejectDeprecatedAlgorithm": True,
            "wantNameId": True,
        },
    }, sp_validation_only=True)
    return OneLogin_Saml2_Response(settings, base64.b64encode(xml).decode())


REQUEST_DATA: dict[str, Any] = {
    "https": "on", "http_host": "auth.huaweicloud.com",
    "script_name": "/authui/saml/SAMLAssertionConsumer", "get_data": {}, "post_data": {},
}

SHAPES = [
    ("rsa2048", False), ("rsa2048", True), ("rsa3072", False), ("rsa3072", True), ("p256", False), ("p256", True),
]


# --------------------------------------------------------------------------- independent peers accept


@pytest.mark.parametrize(("key_name", "sign_response"), SHAPES)
def test_xmlsec1_verifies_each_shape_with_only_our_certificate(key_name: str, sign_response: bool,
                                                                ec_key: TestKey, tmp_path: Path) -> None:
    key = _key(key_name, ec_key)
    xml = _build(key, sign_response=sign_response)
    response_id, assertion_id = _ids(xml)
    assert _xmlsec1(xml, key.cert_pem, tmp_path, assertion_id)
    if sign_response:
        assert _xmlsec1(xml, key.cert_pem, tmp_path, response_id)
    # the same document with somebody else's certificate fails
    assert not _xmlsec1(xml, cached_key("stranger").cert_pem, tmp_path, assertion_id)


@pytest.mark.parametrize(("key_name", "sign_response"), SHAPES)
def test_python3_saml_strict_accepts_each_shape(key_name: str, sign_response: bool, ec_key: TestKey) -> None:
    key = _key(key_name, ec_key)
    response = _onelogin(_build(key, sign_response=sign_response), key, want_messages_signed=sign_response)
    valid = response.is_valid(REQUEST_DATA, request_id=REQUEST_ID, raise_exceptions=False)
    assert response.get_error() is None
    assert valid is True
    assert response.get_attributes() == ATTRIBUTES
    assert response.get_nameid() == "_" + "ab" * 16
    assert response.get_nameid_format() == NAMEID_TRANSIENT
    assert response.get_session_index() == "_sess1"
    assert response.get_issuers() == [IDP]
    assert response.get_audiences() == [SP]


@pytest.mark.parametrize(("key_name", "sign_response"), SHAPES)
def test_our_verifier_accepts_each_shape(key_name: str, sign_response: bool, ec_key: TestKey) -> None:
    key = _key(key_name, ec_key)
    xml = _build(key, sign_response=sign_response)
    response_id, assertion_id = _ids(xml)
    element, cert = verify_enveloped(xml, [key.certificate], element_id=assertion_id)
    assert element.tag == SAML + "Assertion" and cert == key.certificate
    if sign_response:
        element, _ = verify_enveloped(xml, [key.certificate])
        assert element.get("ID") == response_id


@pytest.mark.parametrize("sign_response", [False, True])
def test_schema_valid(sign_response: bool) -> None:
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "saml-schema-protocol-2.0.xsd")))
    doc = etree.fromstring(_build(cached_key("idp"), sign_response=sign_response))
    assert schema.validate(doc), schema.error_log
    error = etree.fromstring(build_error_response(issuer=IDP, destination=ACS, in_response_to=REQUEST_ID,
                                                  now=dt.datetime.now(dt.UTC), message="no session",
                                                  signer=PrivateKeySigner(cached_key("idp").private_key,
                                                                          cached_key("idp").certificate)))
    assert schema.validate(error), schema.error_log


def _assertion_bytes(xml: bytes) -> bytes:
    """The Assertion exactly as sent, cut out of the Response's bytes (no re-serialisation by lxml)."""
    start, end = xml.index(b"<saml:Assertion "), xml.index(b"</saml:Assertion>") + len(b"</saml:Assertion>")
    return xml[start:end]


@pytest.mark.parametrize("sign_response", [False, True])
def test_signed_assertion_alone_is_schema_valid_and_verifies(sign_response: bool, tmp_path: Path) -> None:
    """The Assertion carries its own xs/xsi declarations: cut out of the Response it validates against the
    OASIS assertion schema (idp_bridge/saml/schemas) and its signature still verifies (ours and xmlsec1)."""
    schema_dir = Path(__file__).resolve().parents[1] / "idp_bridge" / "saml" / "schemas"
    schema = etree.XMLSchema(etree.parse(str(schema_dir / "saml-schema-assertion-2.0.xsd")))
    key = cached_key("idp")
    alone = _assertion_bytes(_build(key, sign_response=sign_response))
    assert b"xmlns:xs=" not in alone.split(b">", 1)[1]  # declared once, on the Assertion, not below it
    doc = etree.fromstring(alone)
    assert doc.nsmap.get("xs") == "http://www.w3.org/2001/XMLSchema"
    assert schema.validate(doc), schema.error_log
    element, _ = verify_enveloped(alone, [key.certificate])
    assert element.tag == SAML + "Assertion"
    assert _xmlsec1(alone, key.cert_pem, tmp_path, doc.get("ID") or "")


def test_rebinding_xs_on_the_assertion_breaks_its_signature() -> None:
    """``xs`` is in the InclusiveNamespaces PrefixList: the binding of the prefix used in xsi:type is signed."""
    key = cached_key("idp")
    xml = _build(key).replace(b'xmlns:xs="http://www.w3.org/2001/XMLSchema"', b'xmlns:xs="urn:evil"', 1)
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(xml, [key.certificate], element_id=_ids(xml)[1])
    assert exc.value.code == "signature_digest_mismatch"


# --------------------------------------------------------------------------- shape details


def test_shape_follows_the_shared_spec() -> None:
    now = dt.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    xml = _build(cached_key("idp"), sign_response=True, now=now)
    assert not xml.startswith(b"<?xml")
    root = etree.fromstring(xml)
    assert root.tag == SAMLP + "Response"
    assert root.get("Version") == "2.0" and root.get("IssueInstant") == "2030-01-01T19:04:05Z"
    assert root.get("Destination") == ACS and root.get("InResponseTo") == REQUEST_ID
    assert re.fullmatch(r"_[0-9a-f]{32}", root.get("ID") or "")
    assert [c.tag for c in root] == [SAML + "Issuer", DS + "Signature", SAMLP + "Status", SAML + "Assertion"]
    assert root.find(f"{SAMLP}Status/{SAMLP}StatusCode").get("Value") == (
        "urn:oasis:names:tc:SAML:2.0:status:Success")
    a = root[3]
    assert re.fullmatch(r"_[0-9a-f]{32}", a.get("ID") or "") and a.get("ID") != root.get("ID")
    assert [c.tag for c in a] == [SAML + n for n in ("Issuer",)] + [DS + "Signature"] + [
        SAML + n for n in ("Subject", "Conditions", "AuthnStatement", "AttributeStatement")]
    assert a.findtext(SAML + "Issuer") == IDP
    name_id = a.find(f"{SAML}Subject/{SAML}NameID")
    assert name_id is not None and name_id.get("Format") == NAMEID_TRANSIENT and name_id.get("SPNameQualifier") == SP
    scd = a.find(f"{SAML}Subject/{SAML}SubjectConfirmation/{SAML}SubjectConfirmationData")
    assert scd is not None and scd.getparent().get("Method") == "urn:oasis:names:tc:SAML:2.0:cm:bearer"
    assert scd.attrib == {"InResponseTo": REQUEST_ID, "NotOnOrAfter": "2030-01-01T19:09:05Z", "Recipient": ACS}
    cond = a.find(SAML + "Conditions")
    assert cond is not None
    assert cond.get("NotBefore") == "2030-01-01T19:02:05Z" and cond.get("NotOnOrAfter") == "2030-01-01T19:09:05Z"
    assert cond.findtext(f"{SAML}AudienceRestriction/{SAML}Audience") == SP
    authn = a.find(SAML + "AuthnStatement")
    assert authn is not None and authn.get("AuthnInstant") == "2030-01-01T19:03:35Z"
    assert authn.get("SessionIndex") == "_sess1"
    assert authn.findtext(f"{SAML}AuthnContext/{SAML}AuthnContextClassRef") == AUTHN_PASSWORD_PROTECTED
    attrs = a.findall(f"{SAML}AttributeStatement/{SAML}Attribute")
    assert [x.get("Name") for x in attrs] == list(ATTRIBUTES)
    assert {x.get("NameFormat") for x in attrs} == {"urn:oasis:names:tc:SAML:2.0:attrname-format:uri"}
    values = attrs[4].findall(SAML + "AttributeValue")
    assert values[0].text == ATTRIBUTES["name"][0]
    assert values[0].get("{http://www.w3.org/2001/XMLSchema-instance}type") == "xs:string"


@pytest.mark.parametrize("attributes", [
    ATTRIBUTES, {}, {"q": ["", "]]>", "\u00e9\U0001f600", "a\r\n\tb", "x>y&z<\"'"]},
])
def test_assertion_text_is_exactly_its_exclusive_c14n(attributes: dict[str, list[str]]) -> None:
    """The signer hashes the Assertion text as written: it must equal lxml's exc-c14n of it in the document."""
    now = dt.datetime.now(dt.UTC)
    spec = AssertionSpec(issuer="https://idp/?a=1&b=<2>", destination=ACS + "?x=\"1\"&y=2", audience=SP,
                         in_response_to=REQUEST_ID, name_id="n&<>", now=now, session_index="_s", authn_instant=now,
                         attributes=attributes, sp_name_qualifier=SP)
    text = _canonical_assertion(spec).encode()
    key = cached_key("idp")
    raw = render_response(spec, PrivateKeySigner(key.private_key, key.certificate), sign_assertion=False)
    assert text in raw  # the bytes sent are the bytes hashed
    assertion = etree.fromstring(raw).find(SAML + "Assertion")
    assert assertion is not None
    # exc-c14n with the PrefixList our Reference names: xs and xsi are declared on the Assertion itself.
    assert etree.tostring(assertion, method="c14n", exclusive=True,
                          inclusive_ns_prefixes=list(ASSERTION_INCLUSIVE_PREFIXES)) == text
    assert text.startswith(b'<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
                           b'xmlns:xs="http://www.w3.org/2001/XMLSchema" '
                           b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ID=')


def test_unsigned_assertion_when_only_the_response_is_signed() -> None:
    xml = _build(cached_key("idp"), sign_assertion=False, sign_response=True)
    root = etree.fromstring(xml)
    assert root.find(f"{SAML}Assertion/{DS}Signature") is None
    verify_enveloped(xml, [cached_key("idp").certificate])


def test_multi_valued_and_empty_attributes() -> None:
    key = cached_key("idp")
    xml = _build(key, attributes={"roles": ["a", "b", "c"]})
    response = _onelogin(xml, key)
    assert response.is_valid(REQUEST_DATA, request_id=REQUEST_ID), response.get_error()
    assert response.get_attributes() == {"roles": ["a", "b", "c"]}
    assert etree.fromstring(_build(key, attributes={})).find(f".//{SAML}AttributeStatement") is None


def test_render_response_with_a_spec() -> None:
    key = cached_key("idp")
    now = dt.datetime.now(dt.UTC)
    spec = AssertionSpec(issuer=IDP, destination=ACS, audience=SP, in_response_to=None, name_id="n1", now=now,
                         session_index="_s", authn_instant=now, response_id="_resp1", assertion_id="_asrt1")
    xml = render_response(spec, PrivateKeySigner(key.private_key, key.certificate))
    root = etree.fromstring(xml)
    assert root.get("ID") == "_resp1" and root.get("InResponseTo") is None
    element, _ = verify_enveloped(xml, [key.certificate], element_id="_asrt1")
    assert element.find(f".//{SAML}SubjectConfirmationData").get("InResponseTo") is None


def test_refuses_values_xml_cannot_carry_and_naive_times() -> None:
    key = cached_key("idp")
    with pytest.raises(ResponseBuildError) as exc:
        _build(key, attributes={"name": ["bad\x01char"]})
    assert exc.value.code == "response_bad_character" and "U+0001" in exc.value.operator
    with pytest.raises(ResponseBuildError) as exc:
        _build(key, now=dt.datetime(2030, 1, 1))
    assert exc.value.code == "response_naive_time"
    with pytest.raises(ResponseBuildError):
        _build(key, attributes={"name": "not-a-list"})  # type: ignore[dict-item]
    assert saml_time(dt.datetime(2030, 1, 1, tzinfo=dt.UTC)) == "2030-01-01T00:00:00Z"


def test_error_response() -> None:
    key = cached_key("idp")
    xml = build_error_response(issuer=IDP, destination=ACS, in_response_to=REQUEST_ID,
                               now=dt.datetime.now(dt.UTC), status=STATUS_RESPONDER, sub_status=STATUS_AUTHN_FAILED,
                               message="customer is not logged in",
                               signer=PrivateKeySigner(key.private_key, key.certificate))
    element, _ = verify_enveloped(xml, [key.certificate])
    code = element.find(f"{SAMLP}Status/{SAMLP}StatusCode")
    assert code is not None and code.get("Value") == STATUS_RESPONDER
    assert code[0].get("Value") == STATUS_AUTHN_FAILED
    assert element.findtext(f"{SAMLP}Status/{SAMLP}StatusMessage") == "customer is not logged in"
    assert element.find(SAML + "Assertion") is None
    response = _onelogin(xml, key)
    assert response.is_valid(REQUEST_DATA, request_id=REQUEST_ID) is False
    assert "Responder" in (response.get_error() or "")


# --------------------------------------------------------------------------- tampering and wrong keys fail


def _tamper(xml: bytes) -> bytes:
    assert xml.count(b">cust-0001<") == 2
    return xml.replace(b">cust-0001<", b">cust-9999<", 1)


@pytest.mark.parametrize("sign_response", [False, True])
def test_tampered_attribute_fails_everywhere(sign_response: bool, tmp_path: Path) -> None:
    key = cached_key("idp")
    xml = _tamper(_build(key, sign_response=sign_response))
    response_id, assertion_id = _ids(xml)
    assert not _xmlsec1(xml, key.cert_pem, tmp_path, assertion_id)
    response = _onelogin(xml, key, want_messages_signed=sign_response)
    assert response.is_valid(REQUEST_DATA, request_id=REQUEST_ID) is False
    assert "Signature validation failed" in (response.get_error() or "")
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(xml, [key.certificate], element_id=assertion_id)
    assert exc.value.code == "signature_digest_mismatch"
    if sign_response:
        assert not _xmlsec1(xml, key.cert_pem, tmp_path, response_id)
        with pytest.raises(SignatureError):
            verify_enveloped(xml, [key.certificate])


def test_wrong_certificate_fails_everywhere(tmp_path: Path) -> None:
    key, stranger = cached_key("idp"), cached_key("stranger")
    xml = _build(key)
    _, assertion_id = _ids(xml)
    assert not _xmlsec1(xml, stranger.cert_pem, tmp_path, assertion_id)
    response = _onelogin(xml, stranger)
    assert response.is_valid(REQUEST_DATA, request_id=REQUEST_ID) is False
    assert "Signature validation failed" in (response.get_error() or "")
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(xml, [stranger.certificate], element_id=assertion_id)
    assert algorithms.fingerprint(key.certificate) in exc.value.operator


def test_wrapped_duplicate_assertion_is_rejected_by_our_verifier() -> None:
    key = cached_key("idp")
    xml = _build(key)
    root = etree.fromstring(xml)
    evil = etree.fromstring(etree.tostring(root[2]))
    evil.remove(evil.find(DS + "Signature"))
    for value in evil.iter(SAML + "AttributeValue"):
        value.text = "cust-9999"
    root.insert(2, evil)  # evil first, same ID as the signed one
    _, assertion_id = _ids(xml)
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(etree.tostring(root), [key.certificate], element_id=assertion_id)
    assert exc.value.code == "signature_wrapping"
