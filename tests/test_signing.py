"""Enveloped XML signatures: our signer judged by xmlsec1, our verifier fed xmlsec1's signatures and attacks."""

from __future__ import annotations

import base64
import copy
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from idp_bridge.errors import SignatureError, SigningKeyError
from idp_bridge.saml import algorithms
from idp_bridge.saml.signing import PrivateKeySigner, Signer, sign_enveloped, verify_enveloped
from idp_bridge.saml.xml import NS_DS, NS_SAML
from tests.pki import cached_key, make_key

if TYPE_CHECKING:
    from tests.pki import TestKey

DS = f"{{{NS_DS}}}"
SAML = f"{{{NS_SAML}}}"
ASSERTION_ID_ATTR = "--id-attr:ID urn:oasis:names:tc:SAML:2.0:assertion:Assertion"


def _signer(key: TestKey | None = None, **kw: str) -> PrivateKeySigner:
    key = key or cached_key("idp-signing")
    return PrivateKeySigner(key.private_key, key.certificate, **kw)


@pytest.fixture(scope="module")
def ec_key() -> TestKey:
    return make_key("idp-ec", curve=True)


def _document(assertion_id: str = "_a1", value: str = "alice") -> etree._Element:
    """A Response-like document: default namespace and unused declarations on the ancestor."""
    xml = (
        '<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:unused="urn:unused" ID="_r1">\n'
        "  <saml:Issuer>https://idp.example.com</saml:Issuer>\n"
        f'  <saml:Assertion xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="{assertion_id}" Version="2.0">\n'
        "    <saml:Issuer>https://idp.example.com</saml:Issuer><!-- a comment -->\n"
        f"    <saml:Subject><saml:NameID>{value}</saml:NameID></saml:Subject>\n"
        "  </saml:Assertion>\n"
        "</samlp:Response>"
    )
    return etree.fromstring(xml.encode())


def _xmlsec1_verify(xml: bytes, cert_pem: bytes, tmp_path: Path, *id_attrs: str,
                    node_id: str | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "doc.xml").write_bytes(xml)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    args = ["xmlsec1", "--verify", "--pubkey-cert-pem", str(tmp_path / "cert.pem")]
    for attr in id_attrs or (ASSERTION_ID_ATTR,):
        args += attr.split(" ")
    if node_id:
        args += ["--node-id", node_id]
    return subprocess.run([*args, str(tmp_path / "doc.xml")], capture_output=True, text=True, timeout=30)


def _ok(result: subprocess.CompletedProcess[str]) -> bool:
    """xmlsec1 prints OK (on stderr) and exits 0 only when the signature verified."""
    return result.returncode == 0 and "OK" in (result.stdout + result.stderr).splitlines()


# --------------------------------------------------------------------------- PrivateKeySigner


def test_private_key_signer_defaults_and_protocol() -> None:
    key = cached_key("idp-signing")
    signer = _signer(key)
    assert isinstance(signer, Signer)
    assert signer.algorithm == algorithms.RSA_SHA256
    assert signer.key_id == key.certificate.fingerprint(hashes.SHA256()).hex()[:16]
    assert len(signer.key_id) == 16 and signer.key_id == signer.key_id.lower()
    assert _signer(key, key_id="k1").key_id == "k1"
    sig = signer.sign(b"data")
    pub = key.certificate.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    pub.verify(sig, b"data", padding.PKCS1v15(), hashes.SHA256())


def test_ec_signer_returns_raw_r_s(ec_key: TestKey) -> None:
    signer = _signer(ec_key)
    assert signer.algorithm == algorithms.ECDSA_SHA256
    raw = signer.sign(b"data")
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    pub = ec_key.certificate.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(der, b"data", ec.ECDSA(hashes.SHA256()))


def test_refuses_small_rsa_key() -> None:
    small = make_key("small", bits=1024)
    with pytest.raises(SigningKeyError) as exc:
        PrivateKeySigner(small.private_key, small.certificate)
    assert exc.value.code == "key_too_small" and "1024" in exc.value.operator


def test_refuses_key_certificate_mismatch() -> None:
    a, b = cached_key("idp-signing"), cached_key("other")
    with pytest.raises(SigningKeyError) as exc:
        PrivateKeySigner(a.private_key, b.certificate)
    assert exc.value.code == "key_cert_mismatch"
    assert algorithms.fingerprint(b.certificate) in exc.value.operator


@pytest.mark.parametrize("alg", [algorithms.RSA_SHA1, "http://www.w3.org/2000/09/xmldsig#dsa-sha1"])
def test_refuses_sha1(alg: str) -> None:
    with pytest.raises(SigningKeyError) as exc:
        _signer(algorithm=alg)
    assert "SHA-1" in exc.value.operator


def test_refuses_algorithm_for_the_wrong_key_type() -> None:
    with pytest.raises(SigningKeyError) as exc:
        _signer(algorithm=algorithms.ECDSA_SHA256)
    assert exc.value.code == "key_algorithm_mismatch"


def test_rsa_sha512_signer() -> None:
    signer = _signer(algorithm=algorithms.RSA_SHA512)
    el = _document()[1]
    sign_enveloped(el, signer)
    verify_enveloped(el, [signer.certificate])


# --------------------------------------------------------------------------- sign_enveloped


def test_signature_shape_and_position() -> None:
    root = _document()
    assertion = root[1]
    sign_enveloped(assertion, _signer())
    sig = assertion[1]
    assert assertion[0].tag == SAML + "Issuer" and sig.tag == DS + "Signature"
    si = sig.find(DS + "SignedInfo")
    assert si is not None
    assert si.find(DS + "CanonicalizationMethod").get("Algorithm") == algorithms.C14N_EXCLUSIVE
    assert si.find(DS + "SignatureMethod").get("Algorithm") == algorithms.RSA_SHA256
    refs = si.findall(DS + "Reference")
    assert len(refs) == 1 and refs[0].get("URI") == "#_a1"
    assert [t.get("Algorithm") for t in refs[0].iter(DS + "Transform")] == [
        algorithms.TRANSFORM_ENVELOPED, algorithms.C14N_EXCLUSIVE]
    assert refs[0].find(DS + "DigestMethod").get("Algorithm") == algorithms.DIGEST_SHA256
    cert_b64 = sig.findtext(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
    assert cert_b64 == cached_key("idp-signing").cert_b64


def test_signature_goes_first_without_issuer() -> None:
    el = etree.fromstring(b'<x:Thing xmlns:x="urn:x" ID="_t"><x:a/></x:Thing>')
    sign_enveloped(el, _signer())
    assert el[0].tag == DS + "Signature"
    verify_enveloped(el, [cached_key("idp-signing").certificate])


def test_signed_info_signature_is_over_its_canonical_form_in_the_final_document() -> None:
    """Independent of our verifier: RSA-check the exc-c14n of SignedInfo as lxml computes it in place."""
    root = _document()
    sign_enveloped(root[1], _signer())
    reparsed = etree.fromstring(etree.tostring(root))
    si = reparsed.find(f"{SAML}Assertion/{DS}Signature/{DS}SignedInfo")
    assert si is not None
    canonical = etree.tostring(si, method="c14n", exclusive=True)
    value = base64.b64decode(reparsed.findtext(f"{SAML}Assertion/{DS}Signature/{DS}SignatureValue") or "")
    pub = cached_key("idp-signing").certificate.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    pub.verify(value, canonical, padding.PKCS1v15(), hashes.SHA256())


def test_directly_written_assertion_signature_is_what_lxml_exc_c14n_gives() -> None:
    """The Assertion's signature is written as text (responses.py), with xs/xsi declared on the Assertion and
    named in the Reference's InclusiveNamespaces PrefixList. Independently of our verifier: the DigestValue is
    SHA-256 of lxml's exc-c14n (that PrefixList) of the Assertion without its Signature, and the SignatureValue
    RSA-verifies over lxml's exc-c14n of SignedInfo as it sits in the final document, byte for byte."""
    import datetime as dt
    import hashlib

    from idp_bridge.saml.responses import AssertionSpec, render_response

    now = dt.datetime.now(dt.UTC)
    spec = AssertionSpec(issuer="https://idp.example.com", destination="https://sp/acs", audience="https://sp/",
                         in_response_to="_r1", name_id="_n1", now=now, session_index="_s", authn_instant=now,
                         attributes={"xUserId": ["u1"], "name": ["Zhang & <San>"]})
    root = etree.fromstring(render_response(spec, _signer()))
    assertion = root.find(SAML + "Assertion")
    assert assertion is not None and assertion.nsmap["xs"] == "http://www.w3.org/2001/XMLSchema"
    signature = assertion.find(DS + "Signature")
    assert signature is not None
    transform = signature.findall(f"{DS}SignedInfo/{DS}Reference/{DS}Transforms/{DS}Transform")[1]
    (inclusive,) = list(transform)
    assert inclusive.get("PrefixList") == "xs xsi"
    unsigned = copy.deepcopy(assertion)
    unsigned.remove(unsigned.find(DS + "Signature"))
    canonical = etree.tostring(unsigned, method="c14n", exclusive=True, inclusive_ns_prefixes=["xs", "xsi"])
    digest = signature.findtext(f"{DS}SignedInfo/{DS}Reference/{DS}DigestValue") or ""
    assert base64.b64decode(digest) == hashlib.sha256(canonical).digest()
    signed_info = signature.find(DS + "SignedInfo")
    assert signed_info is not None
    pub = cached_key("idp-signing").certificate.public_key()
    assert isinstance(pub, rsa.RSAPublicKey)
    pub.verify(base64.b64decode(signature.findtext(DS + "SignatureValue") or ""),
               etree.tostring(signed_info, method="c14n", exclusive=True), padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("key_name", ["rsa", "ec"])
def test_xmlsec1_verifies_our_signature_in_a_namespaced_context(key_name: str, ec_key: TestKey,
                                                                 tmp_path: Path) -> None:
    key = ec_key if key_name == "ec" else cached_key("idp-signing")
    root = _document()
    sign_enveloped(root[1], _signer(key))
    xml = etree.tostring(root)
    result = _xmlsec1_verify(xml, key.cert_pem, tmp_path)
    assert _ok(result), result.stderr
    # and the same bytes, tampered, fail there
    bad = _xmlsec1_verify(xml.replace(b">alice<", b">mallory<"), key.cert_pem, tmp_path)
    assert not _ok(bad)


def test_xmlsec1_verifies_inner_and_outer_signatures(tmp_path: Path) -> None:
    key = cached_key("idp-signing")
    root = _document()
    sign_enveloped(root[1], _signer(key))
    sign_enveloped(root, _signer(key))
    assert root[1].tag == DS + "Signature"
    xml = etree.tostring(root)
    response_attr = "--id-attr:ID urn:oasis:names:tc:SAML:2.0:protocol:Response"
    for node in ("_r1", "_a1"):
        result = _xmlsec1_verify(xml, key.cert_pem, tmp_path, ASSERTION_ID_ATTR, response_attr, node_id=node)
        assert _ok(result), (node, result.stderr)
    verify_enveloped(xml, [key.certificate])
    verify_enveloped(xml, [key.certificate], element_id="_a1")


def test_sign_refuses_sha1_digest_bad_id_and_double_signing() -> None:
    root = _document()
    with pytest.raises(SigningKeyError) as exc:
        sign_enveloped(root[1], _signer(), digest=algorithms.DIGEST_SHA1)
    assert exc.value.code == "signing_digest_refused"
    with pytest.raises(SigningKeyError):
        sign_enveloped(_document(assertion_id="1bad id")[1], _signer())
    sign_enveloped(root[1], _signer())
    with pytest.raises(SigningKeyError) as exc:
        sign_enveloped(root[1], _signer())
    assert exc.value.code == "signing_already_signed"


@pytest.mark.parametrize("digest", [algorithms.DIGEST_SHA384, algorithms.DIGEST_SHA512])
def test_other_digests_verify_in_xmlsec1(digest: str, tmp_path: Path) -> None:
    root = _document()
    sign_enveloped(root[1], _signer(), digest=digest)
    key = cached_key("idp-signing")
    assert _ok(_xmlsec1_verify(etree.tostring(root), key.cert_pem, tmp_path))


# --------------------------------------------------------------------------- verify_enveloped


def _xmlsec1_sign(template: bytes, key: TestKey, tmp_path: Path) -> bytes:
    (tmp_path / "tpl.xml").write_bytes(template)
    (tmp_path / "key.pem").write_bytes(key.key_pem)  # test-time key in pytest's tmp dir, never committed
    (tmp_path / "cert.pem").write_bytes(key.cert_pem)
    out = subprocess.run(
        ["xmlsec1", "--sign", "--privkey-pem", f"{tmp_path / 'key.pem'},{tmp_path / 'cert.pem'}",
         *ASSERTION_ID_ATTR.split(" "), "--output", str(tmp_path / "signed.xml"), str(tmp_path / "tpl.xml")],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return (tmp_path / "signed.xml").read_bytes()


_TEMPLATE = b"""<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r9">
  <saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_x9" Version="2.0">
    <saml:Issuer>https://idp.example.com</saml:Issuer>
    <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
      <ds:SignedInfo>
        <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
        <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
        <ds:Reference URI="#_x9">
          <ds:Transforms>
            <ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
            <ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
          </ds:Transforms>
          <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
          <ds:DigestValue/>
        </ds:Reference>
      </ds:SignedInfo>
      <ds:SignatureValue/>
      <ds:KeyInfo><ds:X509Data/></ds:KeyInfo>
    </ds:Signature>
    <saml:Subject><saml:NameID>bob</saml:NameID></saml:Subject>
  </saml:Assertion>
</samlp:Response>"""


def test_verifies_a_signature_made_by_xmlsec1_with_whitespace(tmp_path: Path) -> None:
    key = cached_key("idp-signing")
    signed = _xmlsec1_sign(_TEMPLATE, key, tmp_path)
    element, cert = verify_enveloped(signed, [cached_key("other").certificate, key.certificate], element_id="_x9")
    assert cert == key.certificate
    assert element.findtext(f"{SAML}Subject/{SAML}NameID") == "bob"
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(signed.replace(b">bob<", b">eve<"), [key.certificate], element_id="_x9")
    assert exc.value.code == "signature_digest_mismatch"


def test_verify_returns_the_signed_element_and_certificate() -> None:
    key = cached_key("idp-signing")
    root = _document()
    sign_enveloped(root[1], _signer(key))
    xml = etree.tostring(root)
    element, cert = verify_enveloped(xml, [key.certificate], element_id="_a1")
    assert element.get("ID") == "_a1" and cert == key.certificate
    # the caller's tree is not modified by verification
    assert element[1].tag == DS + "Signature"


def test_verify_rejects_tampering() -> None:
    key = cached_key("idp-signing")
    root = _document()
    sign_enveloped(root[1], _signer(key))
    xml = etree.tostring(root).replace(b">alice<", b">mallory<")
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(xml, [key.certificate], element_id="_a1")
    assert exc.value.code == "signature_digest_mismatch"


def test_verify_rejects_wrong_certificate_and_names_fingerprints() -> None:
    key, other = cached_key("idp-signing"), cached_key("other")
    root = _document()
    sign_enveloped(root[1], _signer(key))
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(etree.tostring(root), [other.certificate], element_id="_a1")
    assert algorithms.fingerprint(other.certificate) in exc.value.operator
    assert algorithms.fingerprint(key.certificate) in exc.value.operator  # what KeyInfo claimed


def test_verify_does_not_trust_keyinfo() -> None:
    """An attacker re-signs with their own key and puts their own certificate in KeyInfo."""
    attacker = cached_key("other")
    root = _document(value="mallory")
    sign_enveloped(root[1], _signer(attacker))
    with pytest.raises(SignatureError):
        verify_enveloped(etree.tostring(root), [cached_key("idp-signing").certificate], element_id="_a1")


def _signed_response() -> etree._Element:
    root = _document()
    sign_enveloped(root[1], _signer())
    return root


def test_wrapping_duplicate_id_is_rejected() -> None:
    """Classic wrapping: an evil Assertion with the signed one's ID, the original hidden elsewhere."""
    root = _signed_response()
    original = root[1]
    evil = copy.deepcopy(original)
    evil.find(f"{SAML}Subject/{SAML}NameID").text = "mallory"
    root.insert(1, evil)
    certs = [cached_key("idp-signing").certificate]
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(etree.tostring(root), certs, element_id="_a1")
    assert exc.value.code == "signature_wrapping"


def test_wrapping_moved_signature_is_rejected() -> None:
    """An unsigned evil Assertion carries the original Signature (Reference to the hidden original)."""
    root = _signed_response()
    original = root[1]
    sig = original[1]
    evil = etree.SubElement(root, SAML + "Assertion", ID="_evil", Version="2.0")
    issuer = etree.SubElement(evil, SAML + "Issuer")
    issuer.text = "https://idp.example.com"
    evil.append(copy.deepcopy(sig))
    etree.SubElement(etree.SubElement(evil, SAML + "Subject"), SAML + "NameID").text = "mallory"
    certs = [cached_key("idp-signing").certificate]
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(etree.tostring(root), certs, element_id="_evil")
    assert exc.value.code == "signature_wrapping"
    # the genuine one still verifies, and what comes back is the genuine element
    element, _ = verify_enveloped(etree.tostring(root), certs, element_id="_a1")
    assert element.findtext(f"{SAML}Subject/{SAML}NameID") == "alice"


def test_unsigned_element_is_rejected() -> None:
    root = _signed_response()
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(etree.tostring(root), [cached_key("idp-signing").certificate])
    assert exc.value.code == "signature_missing"


def _mutated(edit: str, old: bytes, new: bytes) -> bytes:
    xml = etree.tostring(_signed_response())
    assert old in xml, edit
    mutated: bytes = xml.replace(old, new)
    return mutated


@pytest.mark.parametrize(("edit", "old", "new", "code"), [
    ("sha1 signature method", algorithms.RSA_SHA256.encode(), algorithms.RSA_SHA1.encode(), "sigalg_refused"),
    ("sha1 digest", algorithms.DIGEST_SHA256.encode(), algorithms.DIGEST_SHA1.encode(), "signature_digest_refused"),
    ("inclusive c14n", b'CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"',
     b'CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"', "signature_c14n_refused"),
    ("reference elsewhere", b'URI="#_a1"', b'URI="#_r1"', "signature_wrapping"),
    ("empty reference", b'URI="#_a1"', b'URI=""', "signature_wrapping"),
    ("xpath transform", algorithms.TRANSFORM_ENVELOPED.encode(), b"http://www.w3.org/TR/1999/REC-xpath-19991116",
     "signature_transform_refused"),
])
def test_verify_refuses_profile_deviations(edit: str, old: bytes, new: bytes, code: str) -> None:
    with pytest.raises(SignatureError) as exc:
        verify_enveloped(_mutated(edit, old, new), [cached_key("idp-signing").certificate], element_id="_a1")
    assert exc.value.code == code, exc.value.operator


def test_verify_refuses_two_references_and_two_signatures() -> None:
    root = _signed_response()
    si = root[1][1][0]
    si.append(copy.deepcopy(si.find(DS + "Reference")))
    with pytest.raises(SignatureError):
        verify_enveloped(etree.tostring(root), [cached_key("idp-signing").certificate], element_id="_a1")
    root = _signed_response()
    root[1].insert(2, copy.deepcopy(root[1][1]))
    with pytest.raises(SignatureError):
        verify_enveloped(etree.tostring(root), [cached_key("idp-signing").certificate], element_id="_a1")


def test_verify_refuses_doctype_and_empty_certificate_list() -> None:
    xml = etree.tostring(_signed_response())
    with pytest.raises(SignatureError):
        verify_enveloped(xml, [], element_id="_a1")
    with pytest.raises(Exception) as exc:
        verify_enveloped(b'<!DOCTYPE x [<!ENTITY e "x">]>' + xml, [cached_key("idp-signing").certificate])
    assert getattr(exc.value, "code", None) == "xml_dtd_forbidden"


def test_verify_ecdsa(ec_key: TestKey) -> None:
    root = _document()
    sign_enveloped(root[1], _signer(ec_key))
    _, cert = verify_enveloped(etree.tostring(root), [ec_key.certificate], element_id="_a1")
    assert cert == ec_key.certificate
