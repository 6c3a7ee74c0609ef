"""SP-side Response checks (idp_bridge.saml.response_checks), cross-checked with python3-saml strict mode."""

from __future__ import annotations

import base64
import copy
import datetime as dt

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings

from idp_bridge.errors import MetadataError
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.metadata import build_idp_metadata
from idp_bridge.saml.response_checks import (
    IdpMetadata,
    ResponseReport,
    check_response,
    parse_idp_metadata,
)
from idp_bridge.saml.responses import build_response
from idp_bridge.saml.signing import PrivateKeySigner
from idp_bridge.saml.time import parse_instant
from idp_bridge.saml.xml import AUTHN_PASSWORD_PROTECTED, NAMEID_TRANSIENT, NS_SAML, NS_SAMLP, NSMAP
from tests.huawei_fixtures import FIXTURES
from tests.pki import cached_key

IDP_ENTITY = "https://partner.example.com/saml/idp"
SSO_URL = "https://partner.example.com/saml/sso"
SP_ENTITY = "https://auth.huaweicloud.com/"
ACS_URL = "https://auth.huaweicloud.com/authui/saml/SAMLAssertionConsumer"
REQUEST_ID = "_th2kld6nqqaq6lbvbw1cqqkbld2m7shj5i7x"
GOOD_ATTRIBUTES = {"xUserId": ["cust-1001"], "xAccountId": ["cust-1001"], "bpId": ["bp-42"],
                   "email": ["alice@example.com"], "name": ["Alice"], "mobile": ["0086-13800000000"]}

ALL_CHECKS = [
    "xml_parses", "response_root", "response_version", "status_success", "response_destination",
    "response_issuer", "response_in_response_to", "single_assertion", "assertion_signature",
    "signature_algorithm", "assertion_issuer", "subject_confirmation_method",
    "subject_confirmation_in_response_to", "subject_confirmation_recipient",
    "subject_confirmation_not_on_or_after", "conditions_not_before", "conditions_not_on_or_after",
    "audience", "name_id_format", "authn_statement", "attribute_xUserId", "attribute_email",
    "attribute_mobile",
]


def _signer(name: str) -> PrivateKeySigner:
    key = cached_key(name)
    return PrivateKeySigner(key.private_key, key.certificate)


@pytest.fixture(scope="module")
def idp_metadata_xml() -> bytes:
    now = dt.datetime.now(dt.UTC)
    return build_idp_metadata(entity_id=IDP_ENTITY, sso_url=SSO_URL,
                              certificates=[cached_key("idp-signing").certificate],
                              valid_until=now + dt.timedelta(days=30), cache_duration=dt.timedelta(hours=1))


@pytest.fixture(scope="module")
def idp(idp_metadata_xml: bytes) -> IdpMetadata:
    return parse_idp_metadata(idp_metadata_xml)


def make_response(*, now: dt.datetime | None = None, signer: PrivateKeySigner | None = None,
                  attributes: dict[str, list[str]] | None = None, audience: str = SP_ENTITY,
                  destination: str = ACS_URL, issuer: str = IDP_ENTITY, in_response_to: str | None = REQUEST_ID,
                  sign_assertion: bool = True) -> bytes:
    now = now or dt.datetime.now(dt.UTC)
    return build_response(
        issuer=issuer, destination=destination, audience=audience, in_response_to=in_response_to,
        name_id="t-9f8e7d6c", name_id_format=NAMEID_TRANSIENT,
        attributes=GOOD_ATTRIBUTES if attributes is None else attributes, now=now,
        lifetime=dt.timedelta(minutes=5), not_before_skew=dt.timedelta(minutes=2), session_index="s-1",
        authn_instant=now, authn_context=AUTHN_PASSWORD_PROTECTED, signer=signer or _signer("idp-signing"),
        sign_assertion=sign_assertion)


def run(xml: bytes, idp: IdpMetadata, *, now: dt.datetime | None = None) -> ResponseReport:
    return check_response(xml, idp=idp, sp_entity_id=SP_ENTITY, acs_url=ACS_URL,
                          expected_request_ids={REQUEST_ID, "_other"}, now=now or dt.datetime.now(dt.UTC))


def failed_names(report: ResponseReport) -> set[str]:
    return {c.name for c in report.failed}


# --------------------------------------------------------------------------- metadata


def test_parse_idp_metadata(idp: IdpMetadata) -> None:
    assert idp.entity_id == IDP_ENTITY
    assert idp.sso_redirect_url == SSO_URL
    assert idp.sso_post_url == SSO_URL
    assert idp.signing_certificates == (cached_key("idp-signing").certificate,)
    assert idp.want_authn_requests_signed is True
    assert idp.valid_until is not None and idp.valid_until > dt.datetime.now(dt.UTC)


def test_parse_idp_metadata_refuses_sp_metadata_and_missing_parts(idp_metadata_xml: bytes) -> None:
    sp_md = (FIXTURES / "huawei-cn-sp-metadata.xml").read_bytes()
    with pytest.raises(MetadataError) as err:
        parse_idp_metadata(sp_md)
    assert err.value.code == "metadata_idp_descriptor"
    root = etree.fromstring(idp_metadata_xml)
    for kd in root.iter("{urn:oasis:names:tc:SAML:2.0:metadata}KeyDescriptor"):
        kd.getparent().remove(kd)
    with pytest.raises(MetadataError) as err:
        parse_idp_metadata(etree.tostring(root))
    assert err.value.code == "metadata_no_certificate"
    with pytest.raises(MetadataError):
        parse_idp_metadata(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>")


def test_parse_instant() -> None:
    assert parse_instant("2018-11-26T09:11:58.446Z") == dt.datetime(2018, 11, 26, 9, 11, 58, 446000, dt.UTC)
    assert parse_instant("2018-11-26T10:11:58+01:00") == dt.datetime(2018, 11, 26, 9, 11, 58, tzinfo=dt.UTC)
    assert parse_instant("2018-11-26T09:11:58.1234567891Z") is not None
    assert parse_instant("yesterday") is None


# --------------------------------------------------------------------------- the good Response


def test_good_response_passes_every_check(idp: IdpMetadata) -> None:
    report = run(make_response(), idp)
    assert [c.name for c in report.checks] == ALL_CHECKS
    assert report.failed == [], report.failed
    assert report.ok
    assert report.attributes == GOOD_ATTRIBUTES
    assert report.name_id == "t-9f8e7d6c" and report.session_index == "s-1"
    assert report.in_response_to == REQUEST_ID
    assert report.assertion_xml is not None and b"cust-1001" in report.assertion_xml
    assert report.signing_certificate_fingerprint is not None


def test_optional_attributes_may_be_absent(idp: IdpMetadata) -> None:
    report = run(make_response(attributes={"xUserId": ["u1"]}), idp)
    assert report.ok, report.failed
    assert report.check("attribute_email").actual == "(absent)"


# --------------------------------------------------------------------------- one failure each


def test_wrong_audience(idp: IdpMetadata) -> None:
    report = run(make_response(audience="https://auth-intl.huaweicloud.com/"), idp)
    assert failed_names(report) == {"audience"}
    check = report.check("audience")
    assert (check.expected, check.actual) == (SP_ENTITY, "https://auth-intl.huaweicloud.com/")


def test_wrong_recipient(idp: IdpMetadata) -> None:
    wrong = "https://evil.example.net/acs"
    report = run(make_response(destination=wrong), idp)
    assert failed_names(report) == {"response_destination", "subject_confirmation_recipient"}
    for name in failed_names(report):
        assert (report.check(name).expected, report.check(name).actual) == (ACS_URL, wrong)


def test_expired(idp: IdpMetadata) -> None:
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    report = run(make_response(now=issued), idp)
    assert failed_names(report) == {"subject_confirmation_not_on_or_after", "conditions_not_on_or_after"}
    expiry = (issued + dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert report.check("conditions_not_on_or_after").actual == expiry
    assert "minus skew 180 s" in report.check("conditions_not_on_or_after").expected


def test_not_yet_valid(idp: IdpMetadata) -> None:
    report = run(make_response(now=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)), idp)
    assert failed_names(report) == {"conditions_not_before"}


def test_wrong_issuer(idp: IdpMetadata) -> None:
    report = run(make_response(issuer="https://other-partner.example.org/idp"), idp)
    assert failed_names(report) == {"response_issuer", "assertion_issuer"}
    assert report.check("assertion_issuer").expected == IDP_ENTITY
    assert report.check("assertion_issuer").actual == "https://other-partner.example.org/idp"


def test_unknown_in_response_to(idp: IdpMetadata) -> None:
    report = run(make_response(in_response_to="_replayed"), idp)
    assert failed_names(report) == {"response_in_response_to", "subject_confirmation_in_response_to"}
    assert report.check("response_in_response_to").actual == "_replayed"


def test_unsigned_assertion(idp: IdpMetadata) -> None:
    report = run(make_response(sign_assertion=False), idp)
    check = report.check("assertion_signature")
    assert not check.ok and check.actual == "the Assertion carries no ds:Signature"
    # Nothing is read from an unverified Assertion.
    assert report.attributes == {} and report.name_id is None
    assert report.check("attribute_xUserId").actual.startswith("not checked: ")
    assert not report.ok


def test_signature_by_key_not_in_metadata(idp: IdpMetadata) -> None:
    report = run(make_response(signer=_signer("stranger")), idp)
    check = report.check("assertion_signature")
    assert not check.ok
    assert fingerprint(cached_key("idp-signing").certificate) in check.expected
    assert "does not verify" in check.actual
    assert report.attributes == {}


def test_tampered_attribute(idp: IdpMetadata) -> None:
    xml = make_response().replace(b"cust-1001", b"cust-9999")
    report = run(xml, idp)
    check = report.check("assertion_signature")
    assert not check.ok and "modified after signing" in check.actual
    assert report.attributes == {}


def _wrapped(good: bytes, *, same_id: bool) -> bytes:
    """XSW: the genuine signed Assertion is hidden in samlp:Extensions; an evil one takes its place."""
    root = etree.fromstring(good)
    genuine = root.find("saml:Assertion", NSMAP)
    assert genuine is not None
    evil = copy.deepcopy(genuine)
    for value in evil.iter(f"{{{NS_SAML}}}AttributeValue"):
        if value.text == "cust-1001":
            value.text = "admin"
    if not same_id:
        evil.set("ID", "_evil")
        evil.remove(evil.find("ds:Signature", NSMAP))
    extensions = etree.Element(f"{{{NS_SAMLP}}}Extensions")
    root.replace(genuine, evil)
    root.insert(1, extensions)
    extensions.append(genuine)
    out: bytes = etree.tostring(root)
    return out


@pytest.mark.parametrize("same_id", [False, True])
def test_wrapped_assertion(idp: IdpMetadata, same_id: bool) -> None:
    report = run(_wrapped(make_response(), same_id=same_id), idp)
    assert not report.ok
    assert {"single_assertion", "assertion_signature"} <= failed_names(report)
    assert report.check("single_assertion").actual.startswith("2 saml:Assertion")
    assert "admin" not in str(report.to_dict())


def test_missing_x_user_id(idp: IdpMetadata) -> None:
    attrs = {k: v for k, v in GOOD_ATTRIBUTES.items() if k != "xUserId"}
    report = run(make_response(attributes=attrs), idp)
    assert failed_names(report) == {"attribute_xUserId"}
    assert report.check("attribute_xUserId").actual == "(absent)"


def test_empty_x_user_id(idp: IdpMetadata) -> None:
    report = run(make_response(attributes={"xUserId": [" "]}), idp)
    assert failed_names(report) == {"attribute_xUserId"}


def test_65_char_email(idp: IdpMetadata) -> None:
    email = "a" * 53 + "@example.com"
    assert len(email) == 65
    report = run(make_response(attributes={**GOOD_ATTRIBUTES, "email": [email]}), idp)
    assert failed_names(report) == {"attribute_email"}
    check = report.check("attribute_email")
    assert check.expected.startswith("absent, or one address of at most 64 characters")
    assert check.actual == f"{email!r} (65 characters): longer than 64 characters"
    ok64 = "a" * 52 + "@example.com"
    assert run(make_response(attributes={**GOOD_ATTRIBUTES, "email": [ok64]}), idp).ok


@pytest.mark.parametrize("email", ["alice", "alice@localhost", "a..b@example.com", "a b@example.com"])
def test_malformed_email(idp: IdpMetadata, email: str) -> None:
    report = run(make_response(attributes={**GOOD_ATTRIBUTES, "email": [email]}), idp)
    assert failed_names(report) == {"attribute_email"}
    assert report.check("attribute_email").actual.endswith("not a well-formed address")


@pytest.mark.parametrize("mobile", ["13800000000", "+86-13800000000", "00861-3800000000x", "0086-123"])
def test_bad_mobile(idp: IdpMetadata, mobile: str) -> None:
    report = run(make_response(attributes={**GOOD_ATTRIBUTES, "mobile": [mobile]}), idp)
    assert failed_names(report) == {"attribute_mobile"}
    check = report.check("attribute_mobile")
    assert check.actual == repr(mobile) and r"^\d{1,4}-\d{4,15}$" in check.expected


# --------------------------------------------------------------------------- never raises


@pytest.mark.parametrize("xml", [b"", b"not xml", b"<!DOCTYPE r [<!ENTITY x 'y'>]><r>&x;</r>",
                                 b'<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"/>'])
def test_garbage_becomes_failed_checks(idp: IdpMetadata, xml: bytes) -> None:
    report = run(xml, idp)
    assert [c.name for c in report.checks] == ALL_CHECKS
    assert not report.ok
    assert report.check("assertion_signature").actual.startswith("not checked: ")


def test_error_status_is_reported(idp: IdpMetadata) -> None:
    from idp_bridge.saml.responses import build_error_response

    xml = build_error_response(issuer=IDP_ENTITY, destination=ACS_URL, in_response_to=REQUEST_ID,
                               now=dt.datetime.now(dt.UTC), message="customer not logged in")
    report = run(xml, idp)
    status = report.check("status_success")
    assert not status.ok and "AuthnFailed" in status.actual and "customer not logged in" in status.actual
    assert report.check("single_assertion").actual.startswith("0 saml:Assertion")


# --------------------------------------------------------------------------- independent peer


def _onelogin_valid(xml: bytes) -> tuple[bool, str | None]:
    cert = base64.b64encode(cached_key("idp-signing").certificate.public_bytes(Encoding.DER)).decode()
    settings = OneLogin_Saml2_Settings({
        "strict": True,
        "debug": False,
        "sp": {"entityId": SP_ENTITY,
               "assertionConsumerService": {"url": ACS_URL,
                                            "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
               "NameIDFormat": NAMEID_TRANSIENT},
        "idp": {"entityId": IDP_ENTITY,
                "singleSignOnService": {"url": SSO_URL,
                                        "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
                "x509cert": cert},
        "security": {"wantAssertionsSigned": True, "wantMessagesSigned": False, "wantNameId": True,
                     "rejectDeprecatedAlgorithm": True, "wantAttributeStatement": True},
    }, sp_validation_only=True)
    response = OneLogin_Saml2_Response(settings, base64.b64encode(xml).decode())
    request_data = {"https": "on", "http_host": "auth.huaweicloud.com",
                    "script_name": "/authui/saml/SAMLAssertionConsumer", "get_data": {}, "post_data": {}}
    ok = response.is_valid(request_data, request_id=REQUEST_ID, raise_exceptions=False)
    return bool(ok), response.get_error()


def test_python3_saml_agrees_on_good_response(idp: IdpMetadata) -> None:
    xml = make_response()
    assert run(xml, idp).ok
    assert _onelogin_valid(xml) == (True, None)


@pytest.mark.parametrize("variant", ["wrong_audience", "foreign_key", "tampered"])
def test_python3_saml_agrees_on_bad_responses(idp: IdpMetadata, variant: str) -> None:
    xml = {
        "wrong_audience": lambda: make_response(audience="https://auth-intl.huaweicloud.com/"),
        "foreign_key": lambda: make_response(signer=_signer("stranger")),
        "tampered": lambda: make_response().replace(b"cust-1001", b"cust-9999"),
    }[variant]()
    assert not run(xml, idp).ok
    ok, error = _onelogin_valid(xml)
    assert not ok and error
