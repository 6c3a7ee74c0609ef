"""SP metadata parsing (Huawei fixture) and our deterministic, schema-valid IdP metadata."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import onelogin.saml2
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from idp_bridge.errors import ConfigError, MetadataError
from idp_bridge.saml.metadata import (
    Organization,
    build_idp_metadata,
    build_sp_metadata,
    format_xs_duration,
    metadata_etag,
    parse_sp_metadata,
)
from idp_bridge.saml.xml import BINDING_POST, BINDING_REDIRECT, NAMEID_TRANSIENT, NS_DS, NS_MD
from tests.huawei_fixtures import FIXTURES, HUAWEI_ACS, HUAWEI_ENTITY_ID
from tests.pki import cached_key, make_key

SCHEMAS = Path(os.path.dirname(onelogin.saml2.__file__)) / "schemas"
HUAWEI = HUAWEI_ENTITY_ID
IDP = "https://idp.partner.example/saml/metadata"
SSO = "https://idp.partner.example/saml/sso"
UNTIL = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def metadata_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "saml-schema-metadata-2.0.xsd")))


def _idp_metadata(**changes: object) -> bytes:
    args: dict[str, object] = dict(entity_id=IDP, sso_url=SSO, certificates=[cached_key("idp-a").certificate],
                                   valid_until=UNTIL, cache_duration=timedelta(hours=24))
    args.update(changes)
    return build_idp_metadata(**args)  # type: ignore[arg-type]


def _code(exc: pytest.ExceptionInfo[MetadataError] | pytest.ExceptionInfo[ConfigError]) -> str:
    return exc.value.code


# --------------------------------------------------------------------------- Huawei SP metadata


def test_huawei_cn_sp_metadata() -> None:
    raw = (FIXTURES / "huawei-cn-sp-metadata.xml").read_bytes()
    sp = parse_sp_metadata(raw)
    assert sp.entity_id == HUAWEI
    assert sp.acs_locations == (HUAWEI_ACS,)
    assert sp.default_acs().location == HUAWEI_ACS and sp.default_acs().binding == BINDING_POST
    assert sp.default_acs().index == 0 and sp.default_acs().is_default
    assert sp.authn_requests_signed is True and sp.want_assertions_signed is True
    assert sp.name_id_formats == (NAMEID_TRANSIENT,)
    assert sp.valid_until is None
    assert sp.raw == raw
    assert len(sp.signing_certificates) == 1 and len(sp.encryption_certificates) == 1
    cert = sp.signing_certificates[0]
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    assert cert.not_valid_after_utc.date().isoformat() == "2028-06-18"
    assert "auth.huaweicloud.com" in cert.subject.rfc4514_string()


# --------------------------------------------------------------------------- SP metadata variants


def _sp_xml(entity: str = "https://sp.example/", *, descriptor_extra: str = "", acs: str | None = None,
            cert_text: str | None = None, use: str | None = "signing", root_attrs: str = "") -> str:
    cert_text = cert_text if cert_text is not None else cached_key("sp-md").cert_b64
    use_attr = f' use="{use}"' if use else ""
    acs = acs if acs is not None else (f'<md:AssertionConsumerService Binding="{BINDING_POST}" '
                                       'Location="https://sp.example/acs" index="1"/>')
    return (f'<md:EntityDescriptor xmlns:md="{NS_MD}" xmlns:ds="{NS_DS}" entityID="{entity}"{root_attrs}>'
            '<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
            f"<md:KeyDescriptor{use_attr}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_text}"
            f"</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>{descriptor_extra}{acs}"
            "</md:SPSSODescriptor></md:EntityDescriptor>")


def test_certificate_with_whitespace_and_no_use() -> None:
    b64 = cached_key("sp-md").cert_b64
    wrapped = "\n  " + "\n  ".join(b64[i:i + 64] for i in range(0, len(b64), 64)) + "\n"
    sp = parse_sp_metadata(_sp_xml(cert_text=wrapped, use=None).encode())
    assert sp.signing_certificates == (cached_key("sp-md").certificate,)
    assert sp.encryption_certificates == (cached_key("sp-md").certificate,)
    assert sp.authn_requests_signed is False and sp.want_assertions_signed is False


def test_encryption_only_key_is_not_a_signing_key() -> None:
    sp = parse_sp_metadata(_sp_xml(use="encryption").encode())
    assert sp.signing_certificates == () and len(sp.encryption_certificates) == 1


def test_entities_descriptor_with_one_sp() -> None:
    inner = _sp_xml().replace(f' xmlns:md="{NS_MD}" xmlns:ds="{NS_DS}"', "")
    xml = (f'<md:EntitiesDescriptor xmlns:md="{NS_MD}" xmlns:ds="{NS_DS}" validUntil="2030-01-01T00:00:00Z">'
           f'<md:EntityDescriptor entityID="https://idp.other/"><md:IDPSSODescriptor '
           f'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/></md:EntityDescriptor>'
           f"{inner}</md:EntitiesDescriptor>")
    sp = parse_sp_metadata(xml.encode())
    assert sp.entity_id == "https://sp.example/"
    assert sp.valid_until == datetime(2030, 1, 1, tzinfo=UTC)


def test_entities_descriptor_with_two_sps_names_them() -> None:
    a = _sp_xml("https://a.example/").replace(f' xmlns:md="{NS_MD}" xmlns:ds="{NS_DS}"', "")
    b = _sp_xml("https://b.example/").replace(f' xmlns:md="{NS_MD}" xmlns:ds="{NS_DS}"', "")
    xml = f'<md:EntitiesDescriptor xmlns:md="{NS_MD}" xmlns:ds="{NS_DS}">{a}{b}</md:EntitiesDescriptor>'
    with pytest.raises(MetadataError) as exc:
        parse_sp_metadata(xml.encode())
    assert _code(exc) == "metadata_ambiguous"
    assert "https://a.example/" in exc.value.operator and "https://b.example/" in exc.value.operator


def test_valid_until_parsed() -> None:
    sp = parse_sp_metadata(_sp_xml(root_attrs=' validUntil="2027-05-01T08:00:00+08:00"').encode())
    assert sp.valid_until == datetime(2027, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize(("xml", "code"), [
    (f'<md:EntityDescriptor xmlns:md="{NS_MD}" entityID="https://x/"><md:IDPSSODescriptor '
     'protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"/></md:EntityDescriptor>',
     "metadata_no_sp_descriptor"),
    (f'<md:EntitiesDescriptor xmlns:md="{NS_MD}"/>', "metadata_no_sp_descriptor"),
    (_sp_xml(acs=""), "metadata_no_acs"),
    (_sp_xml(acs=f'<md:AssertionConsumerService Binding="{BINDING_REDIRECT}" Location="https://sp/acs" '
                 'index="0"/>'), "metadata_no_acs"),
    (_sp_xml(cert_text="not base64!"), "metadata_bad_certificate"),
    (_sp_xml(cert_text="QUJDRA=="), "metadata_bad_certificate"),
    (_sp_xml(entity=""), "metadata_no_entity_id"),
    ('<x xmlns="urn:other"/>', "metadata_bad_root"),
    (_sp_xml(root_attrs=' validUntil="soon"'), "metadata_malformed"),
    ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + _sp_xml(), "xml_dtd_forbidden"),
    ("<md:EntityDescriptor", "xml_malformed"),
])
def test_sp_metadata_rejections(xml: str, code: str) -> None:
    with pytest.raises(MetadataError) as exc:
        parse_sp_metadata(xml.encode())
    assert _code(exc) == code


# --------------------------------------------------------------------------- our IdP metadata


def test_idp_metadata_is_schema_valid(metadata_schema: etree.XMLSchema) -> None:
    xml = _idp_metadata(certificates=[cached_key("idp-a").certificate, cached_key("idp-b").certificate],
                        organization=Organization("Partner Ltd", "Partner", "https://partner.example/"))
    assert metadata_schema.validate(etree.fromstring(xml)), metadata_schema.error_log
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    xml.decode("utf-8")


def test_idp_metadata_content() -> None:
    certs = [cached_key("idp-a").certificate, cached_key("idp-b").certificate]
    root = etree.fromstring(_idp_metadata(certificates=certs, cache_duration=timedelta(days=7)))
    ns = {"md": NS_MD, "ds": NS_DS}
    assert root.get("entityID") == IDP
    assert root.get("validUntil") == "2026-01-01T00:00:00Z"
    assert root.get("cacheDuration") == "P7D"
    idp = root.find("md:IDPSSODescriptor", ns)
    assert idp is not None
    assert idp.get("WantAuthnRequestsSigned") == "true"
    assert idp.get("protocolSupportEnumeration") == "urn:oasis:names:tc:SAML:2.0:protocol"
    kds = idp.findall("md:KeyDescriptor", ns)
    assert [kd.get("use") for kd in kds] == ["signing", "signing"]
    texts = [kd.findtext("ds:KeyInfo/ds:X509Data/ds:X509Certificate", namespaces=ns) for kd in kds]
    assert texts == [cached_key("idp-a").cert_b64, cached_key("idp-b").cert_b64]
    assert [e.text for e in idp.findall("md:NameIDFormat", ns)] == [NAMEID_TRANSIENT]
    sso = [(e.get("Binding"), e.get("Location")) for e in idp.findall("md:SingleSignOnService", ns)]
    assert sso == [(BINDING_REDIRECT, SSO), (BINDING_POST, SSO)]
    no_post = etree.fromstring(_idp_metadata(post_binding=False))
    assert [e.get("Binding") for e in no_post.iter(f"{{{NS_MD}}}SingleSignOnService")] == [BINDING_REDIRECT]


def test_idp_metadata_is_deterministic_and_public_only() -> None:
    first = _idp_metadata()
    again = _idp_metadata(certificates=[cached_key("idp-a").certificate])
    assert first == again
    assert b"PRIVATE" not in first.upper()
    assert cached_key("idp-a").key_pem not in first
    assert metadata_etag(first) == metadata_etag(again) == '"' + hashlib.sha256(first).hexdigest() + '"'
    assert metadata_etag(_idp_metadata(sso_url=SSO + "2")) != metadata_etag(first)


def test_idp_metadata_read_by_python3_saml() -> None:
    from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser

    settings = OneLogin_Saml2_IdPMetadataParser.parse(_idp_metadata().decode())
    idp = settings["idp"]
    assert idp["entityId"] == IDP
    assert idp["singleSignOnService"]["url"] == SSO
    assert idp["singleSignOnService"]["binding"] == BINDING_REDIRECT
    assert idp["x509cert"] == cached_key("idp-a").cert_b64
    assert settings["sp"]["NameIDFormat"] == NAMEID_TRANSIENT


def test_idp_metadata_refusals() -> None:
    with pytest.raises(MetadataError) as exc:
        _idp_metadata(certificates=[])
    assert _code(exc) == "no_certificate"
    with pytest.raises(MetadataError) as exc:
        _idp_metadata(certificates=[cached_key("idp-a").certificate] * 2)
    assert _code(exc) == "duplicate_certificate"
    with pytest.raises(MetadataError) as exc:
        _idp_metadata(certificates=[make_key("small", bits=1024).certificate])
    assert _code(exc) == "key_too_small"
    with pytest.raises(MetadataError) as exc:
        _idp_metadata(valid_until=datetime(2026, 1, 1))  # naive on purpose
    assert _code(exc) == "naive_datetime"
    with pytest.raises(MetadataError) as exc:
        _idp_metadata(cache_duration=timedelta(0))
    assert _code(exc) == "bad_duration"


@pytest.mark.parametrize(("value", "text"), [
    (timedelta(hours=24), "P1D"), (timedelta(days=7), "P7D"), (timedelta(hours=36), "PT36H"),
    (timedelta(minutes=90), "PT90M"), (timedelta(seconds=45), "PT45S"), (timedelta(seconds=1.5), "PT1.5S"),
])
def test_duration_format(value: timedelta, text: str, metadata_schema: etree.XMLSchema) -> None:
    assert format_xs_duration(value) == text
    assert metadata_schema.validate(etree.fromstring(_idp_metadata(cache_duration=value)))


def test_ec_certificate_accepted(metadata_schema: etree.XMLSchema) -> None:
    xml = _idp_metadata(certificates=[make_key("ec-idp", curve=True).certificate])
    assert metadata_schema.validate(etree.fromstring(xml))


# --------------------------------------------------------------------------- SP metadata builder (simulator)


def test_sp_metadata_builder_round_trip(metadata_schema: etree.XMLSchema) -> None:
    cert = cached_key("sim-sp").certificate
    xml = build_sp_metadata(entity_id=HUAWEI, acs_url=HUAWEI_ACS, certificate=cert)
    assert metadata_schema.validate(etree.fromstring(xml)), metadata_schema.error_log
    sp = parse_sp_metadata(xml)
    huawei = parse_sp_metadata((FIXTURES / "huawei-cn-sp-metadata.xml").read_bytes())
    assert (sp.entity_id, sp.acs_endpoints, sp.authn_requests_signed, sp.want_assertions_signed,
            sp.name_id_formats) == (huawei.entity_id, huawei.acs_endpoints, True, True, huawei.name_id_formats)
    assert sp.signing_certificates == (cert,) and sp.encryption_certificates == (cert,)
    unsigned = parse_sp_metadata(build_sp_metadata(entity_id=HUAWEI, acs_url=HUAWEI_ACS, certificate=cert,
                                                   authn_requests_signed=False, want_assertions_signed=False))
    assert not unsigned.authn_requests_signed and not unsigned.want_assertions_signed


# --------------------------------------------------------------------------- algorithm support (alg:SigningMethod)

ALG = "urn:oasis:names:tc:SAML:metadata:algsupport"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


def test_huawei_metadata_advertises_no_signing_method() -> None:
    huawei = parse_sp_metadata((FIXTURES / "huawei-cn-sp-metadata.xml").read_bytes())
    assert huawei.signing_methods == ()


def test_signing_methods_from_entity_and_sp_descriptor_extensions() -> None:
    cert_b64 = "".join(cached_key("sim-sp").cert_pem.decode().strip().splitlines()[1:-1])
    xml = f"""<md:EntityDescriptor xmlns:md="{NS_MD}" xmlns:ds="{NS_DS}" xmlns:alg="{ALG}" entityID="{HUAWEI}">
      <md:Extensions>
        <alg:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
        <alg:SigningMethod Algorithm="{ECDSA_SHA256}" MinKeySize="256"/>
      </md:Extensions>
      <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
        <md:Extensions>
          <alg:SigningMethod Algorithm="{RSA_SHA256}"/>
          <alg:SigningMethod Algorithm=" {ECDSA_SHA256} "/>
        </md:Extensions>
        <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_b64}
        </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
        <md:AssertionConsumerService Binding="{BINDING_POST}" Location="{HUAWEI_ACS}" index="0"/>
      </md:SPSSODescriptor>
    </md:EntityDescriptor>""".encode()
    assert parse_sp_metadata(xml).signing_methods == (ECDSA_SHA256, RSA_SHA256)
    # an alg:SigningMethod outside md:Extensions is not an advertisement
    stray = xml.replace(b"<md:Extensions>", b"<md:Extensions><x xmlns='urn:x'>", 1).replace(
        b"</md:Extensions>", b"</x></md:Extensions>", 1)
    assert parse_sp_metadata(stray).signing_methods == (RSA_SHA256, ECDSA_SHA256)


def test_sp_metadata_builder_advertises_signing_methods(metadata_schema: etree.XMLSchema) -> None:
    cert = cached_key("sim-sp").certificate
    xml = build_sp_metadata(entity_id=HUAWEI, acs_url=HUAWEI_ACS, certificate=cert,
                            signing_methods=[ECDSA_SHA256, RSA_SHA256])
    assert metadata_schema.validate(etree.fromstring(xml)), metadata_schema.error_log
    assert parse_sp_metadata(xml).signing_methods == (ECDSA_SHA256, RSA_SHA256)
    plain = build_sp_metadata(entity_id=HUAWEI, acs_url=HUAWEI_ACS, certificate=cert)
    assert b"algsupport" not in plain and parse_sp_metadata(plain).signing_methods == ()
