"""AuthnRequest parsing, trust checks against SP metadata, and the Huawei-shaped builder."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import onelogin.saml2
import pytest
from lxml import etree

from idp_bridge.errors import RequestError, SignatureError, StatusResponseError
from idp_bridge.saml.bindings import RedirectMessage, decode_redirect, encode_redirect
from idp_bridge.saml.metadata import Endpoint, ServiceProviderMetadata, build_sp_metadata, parse_sp_metadata
from idp_bridge.saml.request_builder import build_authn_request
from idp_bridge.saml.requests import (
    NAMEID_UNSPECIFIED,
    REQUEST_CHECKS,
    AuthnRequest,
    check_authn_request,
    find_sp,
    judge_authn_request,
    parse_authn_request,
)
from idp_bridge.saml.signing import PrivateKeySigner
from idp_bridge.saml.xml import BINDING_POST, BINDING_REDIRECT, NAMEID_TRANSIENT, STATUS_INVALID_NAMEID_POLICY
from tests.huawei_fixtures import FIXTURES, HUAWEI_ACS, HUAWEI_ENTITY_ID
from tests.pki import cached_key

SCHEMAS = Path(os.path.dirname(onelogin.saml2.__file__)) / "schemas"
HUAWEI = HUAWEI_ENTITY_ID
SSO = "https://idp.example.com/saml/sso"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def _huawei_sp() -> ServiceProviderMetadata:
    """Huawei's SP metadata, letting requests arrive unsigned: the rule tests here judge bare requests
    (no query); the signature rule is tested with real signed queries (``_signed``)."""
    return dataclasses.replace(parse_sp_metadata((FIXTURES / "huawei-cn-sp-metadata.xml").read_bytes()),
                               authn_requests_signed=False)


def _request(**changes: object) -> AuthnRequest:
    req = parse_authn_request(build_authn_request(issuer=HUAWEI, destination=SSO, acs_url=HUAWEI_ACS, now=NOW))
    return dataclasses.replace(req, **changes)  # type: ignore[arg-type]


def _code(exc: pytest.ExceptionInfo[RequestError]) -> str:
    return exc.value.code


# --------------------------------------------------------------------------- fixture


def test_parse_huawei_doc_sample_fields() -> None:
    value = (FIXTURES / "huawei-doc-sample-samlrequest.txt").read_text().strip()
    req = parse_authn_request(decode_redirect(f"SAMLRequest={value}").xml)
    assert req.id == "_th2kld6nqqaq6lbvbw1cqqkbld2m7shj5i7x"
    assert req.issuer == HUAWEI
    assert req.issue_instant == datetime(2018, 11, 26, 9, 11, 58, 446000, tzinfo=UTC)
    assert req.destination == "http://hwtest.51web.com/user/product/cloud/century/ecs!loginHw.action"
    assert req.acs_url == HUAWEI_ACS and req.acs_index is None
    assert req.protocol_binding == BINDING_POST
    assert req.force_authn is False and req.is_passive is False
    assert req.name_id_format == NAMEID_TRANSIENT
    assert req.sp_name_qualifier == HUAWEI and req.allow_create is True
    assert req.version == "2.0"


def test_builder_reproduces_huawei_sample_byte_for_byte() -> None:
    expected = (FIXTURES / "huawei-doc-sample-authnrequest.xml").read_bytes().strip()
    built = build_authn_request(
        issuer=HUAWEI, destination="http://hwtest.51web.com/user/product/cloud/century/ecs!loginHw.action",
        acs_url=HUAWEI_ACS, now=datetime(2018, 11, 26, 9, 11, 58, 446000, tzinfo=UTC),
        request_id="_th2kld6nqqaq6lbvbw1cqqkbld2m7shj5i7x")
    assert built == expected


def test_built_request_is_schema_valid_and_ids_are_fresh() -> None:
    schema = etree.XMLSchema(etree.parse(str(SCHEMAS / "saml-schema-protocol-2.0.xsd")))
    a = build_authn_request(issuer=HUAWEI, destination=SSO, acs_url=HUAWEI_ACS, now=NOW)
    b = build_authn_request(issuer=HUAWEI, destination=SSO, acs_url=HUAWEI_ACS, now=NOW)
    assert schema.validate(etree.fromstring(a)), schema.error_log
    assert parse_authn_request(a).id != parse_authn_request(b).id


# --------------------------------------------------------------------------- accepted path


def test_check_accepts_huawei_request_and_uses_metadata_acs() -> None:
    accepted = check_authn_request(_request(), sp=_huawei_sp(), sso_urls=[SSO], now=NOW + timedelta(seconds=5))
    assert accepted.acs_url == HUAWEI_ACS
    assert accepted.sp_entity_id == HUAWEI
    assert accepted.request.id.startswith("_")


def test_no_acs_in_request_uses_default_post_acs() -> None:
    sp = dataclasses.replace(_huawei_sp(), acs_endpoints=(
        Endpoint(BINDING_REDIRECT, "https://sp/redirect", 0, True),
        Endpoint(BINDING_POST, "https://sp/first", 1, False),
        Endpoint(BINDING_POST, "https://sp/default", 2, True),
    ))
    assert check_authn_request(_request(acs_url=None), sp=sp, sso_urls=[SSO], now=NOW).acs_url == "https://sp/default"
    assert check_authn_request(_request(acs_url=None, acs_index=1), sp=sp, sso_urls=[SSO],
                               now=NOW).acs_url == "https://sp/first"
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(acs_url=None, acs_index=0), sp=sp, sso_urls=[SSO], now=NOW)
    assert _code(exc) == "acs_binding_unsupported"
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(acs_url=None, acs_index=7), sp=sp, sso_urls=[SSO], now=NOW)
    assert _code(exc) == "acs_not_in_metadata"


def test_absent_destination_is_allowed() -> None:
    assert check_authn_request(_request(destination=None), sp=_huawei_sp(), sso_urls=[SSO], now=NOW)


def test_skew_boundaries_are_inclusive() -> None:
    skew = timedelta(minutes=3)
    for now in (NOW + skew, NOW - skew):
        assert check_authn_request(_request(), sp=_huawei_sp(), sso_urls=[SSO], now=now, skew=skew)


def test_full_redirect_pipeline_with_signature() -> None:
    key = cached_key("huawei-sim")
    sp = parse_sp_metadata(build_sp_metadata(entity_id=HUAWEI, acs_url=HUAWEI_ACS, certificate=key.certificate))
    xml = build_authn_request(issuer=HUAWEI, destination=SSO, acs_url=HUAWEI_ACS, now=NOW)
    from idp_bridge.saml.bindings import verify_redirect_signature
    from idp_bridge.saml.signing import PrivateKeySigner

    url = encode_redirect(xml, endpoint=SSO, relay_state="state", signer=PrivateKeySigner(key.private_key,
                                                                                         key.certificate))
    msg = decode_redirect(url.partition("?")[2])
    assert verify_redirect_signature(msg, sp.signing_certificates, required=sp.authn_requests_signed)
    req = find_sp(parse_authn_request(msg.xml).issuer, [sp])
    accepted = check_authn_request(parse_authn_request(msg.xml), sp=req, sso_urls=[SSO], now=NOW, redirect=msg)
    assert accepted.acs_url == HUAWEI_ACS
    with pytest.raises(SignatureError) as exc:  # the same request without its query signature
        check_authn_request(parse_authn_request(msg.xml), sp=req, sso_urls=[SSO], now=NOW)
    assert exc.value.code == "signature_missing"


# --------------------------------------------------------------------------- check rejections


def test_unknown_issuer() -> None:
    with pytest.raises(RequestError) as exc:
        find_sp("https://evil.example/", [_huawei_sp()])
    assert _code(exc) == "unknown_issuer"
    assert HUAWEI in exc.value.operator and "https://evil.example/" in exc.value.operator
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(issuer="https://evil.example/"), sp=_huawei_sp(), sso_urls=[SSO], now=NOW)
    assert _code(exc) == "unknown_issuer"
    assert find_sp(HUAWEI, [_huawei_sp()]).entity_id == HUAWEI


def test_acs_not_in_metadata() -> None:
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(acs_url="https://evil.example/acs"), sp=_huawei_sp(), sso_urls=[SSO], now=NOW)
    assert _code(exc) == "acs_not_in_metadata"
    assert HUAWEI_ACS in exc.value.operator and "https://evil.example/acs" in exc.value.operator


def test_acs_must_match_exactly() -> None:
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(acs_url=HUAWEI_ACS + "/"), sp=_huawei_sp(), sso_urls=[SSO], now=NOW)
    assert _code(exc) == "acs_not_in_metadata"


def test_destination_mismatch() -> None:
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(destination="https://other.example/sso"), sp=_huawei_sp(), sso_urls=[SSO],
                            now=NOW)
    assert _code(exc) == "destination_mismatch"
    assert SSO in exc.value.operator and "https://other.example/sso" in exc.value.operator


def test_stale_request() -> None:
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(), sp=_huawei_sp(), sso_urls=[SSO],
                            now=NOW + timedelta(minutes=3, milliseconds=1))
    assert _code(exc) == "request_stale"
    assert "2025-03-01T12:00:00.000Z" in exc.value.operator and "0:03:00" in exc.value.operator


def test_request_from_future() -> None:
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(), sp=_huawei_sp(), sso_urls=[SSO], now=NOW - timedelta(minutes=10))
    assert _code(exc) == "request_from_future"
    assert "2025-03-01T11:50:00.000Z" in exc.value.operator


def test_protocol_binding_must_be_post() -> None:
    with pytest.raises(RequestError) as exc:
        check_authn_request(_request(protocol_binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact"),
                            sp=_huawei_sp(), sso_urls=[SSO], now=NOW)
    assert _code(exc) == "binding_unsupported"


# --------------------------------------------------------------------------- parse rejections


def _xml(attrs: str = 'ID="_1" Version="2.0" IssueInstant="2025-03-01T12:00:00Z"',
         body: str = f'<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">{HUAWEI}</saml2:Issuer>',
         prolog: str = "") -> bytes:
    return (f'{prolog}<saml2p:AuthnRequest xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" {attrs}>'
            f"{body}</saml2p:AuthnRequest>").encode()


def test_minimal_request_parses() -> None:
    req = parse_authn_request(_xml())
    assert (req.id, req.issuer, req.destination, req.acs_url, req.allow_create) == ("_1", HUAWEI, None, None, None)


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
)


def test_billion_laughs_refused_through_redirect() -> None:
    xml = _xml(body='<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">&lol3;</saml2:Issuer>',
               prolog=BILLION_LAUGHS)
    msg = decode_redirect(encode_redirect(xml, endpoint=SSO).partition("?")[2])
    with pytest.raises(RequestError) as exc:
        parse_authn_request(msg.xml)
    assert _code(exc) == "xml_dtd_forbidden"


def test_external_entity_refused() -> None:
    xml = _xml(prolog='<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
               body='<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">&xxe;</saml2:Issuer>')
    with pytest.raises(RequestError) as exc:
        parse_authn_request(xml)
    assert _code(exc) == "xml_dtd_forbidden"


def test_embedded_signature_refused() -> None:
    sig = ('<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/>'
           "<ds:SignatureValue>AAAA</ds:SignatureValue></ds:Signature>")
    body = f'<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">{HUAWEI}</saml2:Issuer>'
    with pytest.raises(RequestError) as exc:
        parse_authn_request(_xml(body=body + sig))
    assert _code(exc) == "embedded_signature_refused"
    nested = f"<saml2p:Extensions>{sig}</saml2p:Extensions>"
    with pytest.raises(RequestError) as exc:
        parse_authn_request(_xml(body=body + nested))
    assert _code(exc) == "embedded_signature_refused"


@pytest.mark.parametrize(("xml", "code"), [
    (b'<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_1" Version="2.0"/>',
     "not_authn_request"),
    (b'<AuthnRequest ID="_1" Version="2.0"/>', "not_authn_request"),
    (_xml('ID="_1" Version="1.1" IssueInstant="2025-03-01T12:00:00Z"'), "unsupported_version"),
    (_xml('Version="2.0" IssueInstant="2025-03-01T12:00:00Z"'), "request_id_missing"),
    (_xml('ID="_1" Version="2.0"'), "request_malformed"),
    (_xml(f'ID="_{"a" * 256}" Version="2.0" IssueInstant="2025-03-01T12:00:00Z"'), "request_id_invalid"),
    (_xml('ID="1abc" Version="2.0" IssueInstant="2025-03-01T12:00:00Z"'), "request_id_invalid"),
    (_xml('ID="_1" Version="2.0" IssueInstant="yesterday"'), "request_malformed"),
    (_xml(body=""), "issuer_missing"),
    (_xml(body='<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">  </saml2:Issuer>'),
     "issuer_missing"),
    (_xml('ID="_1" Version="2.0" IssueInstant="2025-03-01T12:00:00Z" ForceAuthn="maybe"'), "request_malformed"),
    (_xml('ID="_1" Version="2.0" IssueInstant="2025-03-01T12:00:00Z" AssertionConsumerServiceIndex="x"'),
     "request_malformed"),
    (_xml('ID="_1" Version="2.0" IssueInstant="2025-03-01T12:00:00Z" AssertionConsumerServiceIndex="0" '
          'AssertionConsumerServiceURL="https://a/"'), "request_malformed"),
    (b"<not-xml", "xml_malformed"),
    # the Issuer is plain text compared exactly: a comment/PI/element would cut what ``.text`` sees
    (_xml(body=f'<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">{HUAWEI}<!---->.evil'
               "</saml2:Issuer>"), "issuer_malformed"),
    (_xml(body=f'<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion"><?pi x?>{HUAWEI}'
               "</saml2:Issuer>"), "issuer_malformed"),
    (_xml(body=f'<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">{HUAWEI}<b/></saml2:Issuer>'),
     "issuer_malformed"),
])
def test_parse_rejections(xml: bytes, code: str) -> None:
    with pytest.raises(RequestError) as exc:
        parse_authn_request(xml)
    assert _code(exc) == code


def test_issue_instant_forms() -> None:
    for text, expected in [
        ("2025-03-01T12:00:00Z", NOW),
        ("2025-03-01T12:00:00", NOW),
        ("2025-03-01T20:00:00+08:00", NOW),
        ("2025-03-01T12:00:00.123456789Z", NOW + timedelta(microseconds=123456)),
    ]:
        req = parse_authn_request(_xml(f'ID="_1" Version="2.0" IssueInstant="{text}"'))
        assert req.issue_instant == expected and req.issue_instant.tzinfo is not None


def test_issuer_is_never_trimmed() -> None:
    padded = parse_authn_request(_xml(body='<saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">'
                                            f"\n {HUAWEI} </saml2:Issuer>"))
    assert padded.issuer == f"\n {HUAWEI} "
    with pytest.raises(RequestError) as exc:
        check_authn_request(padded, sp=_huawei_sp(), sso_urls=[SSO], now=NOW)
    assert _code(exc) == "unknown_issuer" and repr(padded.issuer) in exc.value.operator


def test_huawei_doc_sample_passes_every_rule() -> None:
    """Huawei's own sample request (unsigned, its Destination) is accepted by every rule, in order."""
    value = (FIXTURES / "huawei-doc-sample-samlrequest.txt").read_text().strip()
    msg = decode_redirect(f"SAMLRequest={value}")
    req = parse_authn_request(msg.xml)
    assert req.destination is not None
    verdict = judge_authn_request(req, sp=_huawei_sp(), sso_urls=[req.destination],
                                  now=req.issue_instant + timedelta(seconds=30), redirect=msg)
    assert verdict.ok, verdict.checks.failed
    assert [c.name for c in verdict.checks] == list(REQUEST_CHECKS)
    assert verdict.accept().acs_url == HUAWEI_ACS


def _signed(xml: bytes) -> RedirectMessage:
    key = cached_key("huawei-sim")
    url = encode_redirect(xml, endpoint=SSO, signer=PrivateKeySigner(key.private_key, key.certificate))
    return decode_redirect(url.partition("?")[2])


def _signing_sp() -> ServiceProviderMetadata:
    key = cached_key("huawei-sim")
    return parse_sp_metadata(build_sp_metadata(entity_id=HUAWEI, acs_url=HUAWEI_ACS, certificate=key.certificate))


def test_signed_request_must_carry_destination() -> None:
    """SAML bindings §3.4.5.2: Destination is optional only on an unsigned request."""
    xml = build_authn_request(issuer=HUAWEI, destination=SSO, acs_url=HUAWEI_ACS, now=NOW)
    bare = xml.replace(f' Destination="{SSO}"'.encode(), b"")
    msg = _signed(bare)
    req = parse_authn_request(msg.xml)
    with pytest.raises(RequestError) as exc:
        check_authn_request(req, sp=_signing_sp(), sso_urls=[SSO], now=NOW, redirect=msg)
    assert _code(exc) == "destination_missing" and SSO in exc.value.operator
    assert check_authn_request(req, sp=_huawei_sp(), sso_urls=[SSO], now=NOW)  # unsigned and allowed: fine
    signed = _signed(xml)
    assert check_authn_request(parse_authn_request(signed.xml), sp=_signing_sp(), sso_urls=[SSO], now=NOW,
                               redirect=signed)


@pytest.mark.parametrize(("fmt", "spnq", "ok"), [
    (NAMEID_TRANSIENT, HUAWEI, True),
    (NAMEID_UNSPECIFIED, HUAWEI, True),
    (None, None, True),
    ("urn:oasis:names:tc:SAML:2.0:nameid-format:persistent", HUAWEI, False),
    ("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress", HUAWEI, False),
    (NAMEID_TRANSIENT, "https://affiliation.example/", False),
])
def test_name_id_policy(fmt: str | None, spnq: str | None, ok: bool) -> None:
    req = _request(name_id_format=fmt, sp_name_qualifier=spnq)
    if ok:
        assert check_authn_request(req, sp=_huawei_sp(), sso_urls=[SSO], now=NOW).acs_url == HUAWEI_ACS
        return
    with pytest.raises(StatusResponseError) as exc:
        check_authn_request(req, sp=_huawei_sp(), sso_urls=[SSO], now=NOW)
    assert exc.value.code == "invalid_name_id_policy"
    assert exc.value.sub_status == STATUS_INVALID_NAMEID_POLICY
    assert exc.value.acs_url == HUAWEI_ACS and exc.value.in_response_to == req.id


def test_an_unsatisfiable_policy_of_an_untrusted_request_is_not_answered() -> None:
    """Only a request that passes every other rule earns a Response: a stale one is refused outright."""
    req = _request(name_id_format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent")
    with pytest.raises(RequestError) as exc:
        check_authn_request(req, sp=_huawei_sp(), sso_urls=[SSO], now=NOW + timedelta(hours=1))
    assert _code(exc) == "request_stale" and not isinstance(exc.value, StatusResponseError)
