"""HTTP-Redirect / HTTP-POST bindings: decoding bounds, raw-octet signatures, interop with python3-saml."""

from __future__ import annotations

import base64
import re
import zlib
from urllib.parse import parse_qsl, quote, quote_plus, unquote_to_bytes, urlsplit

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from idp_bridge.errors import RequestError, SignatureError
from idp_bridge.saml import algorithms, bindings
from idp_bridge.saml.bindings import (
    Limits,
    decode_post,
    decode_redirect,
    encode_post,
    encode_redirect,
    verify_redirect_signature,
)
from idp_bridge.saml.signing import PrivateKeySigner
from tests.huawei_fixtures import FIXTURES
from tests.pki import cached_key, make_key

SSO = "https://idp.example.com/saml/sso"
XML = (b'<?xml version="1.0" encoding="UTF-8"?><saml2p:AuthnRequest '
       b'xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" ID="_abc" Version="2.0"/>')


def _deflate_b64(xml: bytes) -> str:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(c.compress(xml) + c.flush()).decode()


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


def _signer() -> PrivateKeySigner:
    key = cached_key("sp-bindings")
    return PrivateKeySigner(key.private_key, key.certificate)


def _query(url: str) -> str:
    return urlsplit(url).query


def _code(exc: pytest.ExceptionInfo[RequestError]) -> str:
    return exc.value.code


# --------------------------------------------------------------------------- Huawei fixture


def test_huawei_doc_sample_decodes_to_the_documented_authnrequest() -> None:
    value = (FIXTURES / "huawei-doc-sample-samlrequest.txt").read_text().strip()
    msg = decode_redirect(f"SAMLRequest={value}")
    expected = (FIXTURES / "huawei-doc-sample-authnrequest.xml").read_bytes()
    def c14n(b: bytes) -> bytes:
        out: bytes = etree.tostring(etree.fromstring(b), method="c14n")
        return out

    assert c14n(msg.xml) == c14n(expected)
    assert msg.relay_state is None and msg.signature is None and msg.sig_alg is None
    assert msg.signed_octets is None and msg.param == "SAMLRequest"


# --------------------------------------------------------------------------- round trips


def test_signed_round_trip_and_relay_state() -> None:
    signer = _signer()
    url = encode_redirect(XML, endpoint=SSO, relay_state="https://console.example/?a=1&b=ä b", signer=signer)
    assert url.startswith(SSO + "?SAMLRequest=")
    msg = decode_redirect(_query(url))
    assert msg.xml == XML
    assert msg.relay_state == "https://console.example/?a=1&b=ä b"
    assert msg.sig_alg == algorithms.RSA_SHA256
    assert verify_redirect_signature(msg, [signer.certificate], required=True) == signer.certificate


def test_encode_appends_to_existing_query_and_response_param() -> None:
    url = encode_redirect(XML, endpoint=SSO + "?x=1", param="SAMLResponse")
    assert url.startswith(SSO + "?x=1&SAMLResponse=")
    msg = decode_redirect(_query(url), param="SAMLResponse")
    assert msg.xml == XML and msg.param == "SAMLResponse"
    with pytest.raises(RequestError) as exc:
        decode_redirect(_query(url))
    assert _code(exc) == "message_missing"


def test_unsigned_allowed_when_not_required() -> None:
    msg = decode_redirect(_query(encode_redirect(XML, endpoint=SSO)))
    assert verify_redirect_signature(msg, [_signer().certificate], required=False) is None


def test_ecdsa_signed_round_trip() -> None:
    key = make_key("ec-sp", curve=True)
    signer = PrivateKeySigner(key.private_key, key.certificate)
    msg = decode_redirect(_query(encode_redirect(XML, endpoint=SSO, relay_state="r", signer=signer)))
    assert verify_redirect_signature(msg, [key.certificate], required=True) == key.certificate


def test_second_certificate_verifies_during_rotation() -> None:
    signer = _signer()
    msg = decode_redirect(_query(encode_redirect(XML, endpoint=SSO, signer=signer)))
    other = cached_key("sp-bindings-old").certificate
    assert verify_redirect_signature(msg, [other, signer.certificate], required=True) == signer.certificate


# --------------------------------------------------------------------------- sender encodings


def _hand_signed(samlrequest_raw: str, relay_raw: str | None, sigalg_raw: str, *, order: str = "natural",
                 extra: str = "") -> tuple[str, bytes]:
    signer = _signer()
    parts = [f"SAMLRequest={samlrequest_raw}"]
    if relay_raw is not None:
        parts.append(f"RelayState={relay_raw}")
    parts.append(f"SigAlg={sigalg_raw}")
    signed = "&".join(parts).encode()
    sig = "Signature=" + _lower_hex(quote(base64.b64encode(signer.sign(signed)).decode(), safe=""))
    params = [*parts, sig]
    if order == "reversed":
        params.reverse()
    query = "&".join(params) + extra
    return query, signed


@pytest.mark.parametrize("variant", ["lower_hex_plus", "pct20_slash_unescaped", "reordered_with_extra"])
def test_signature_verifies_over_raw_octets_whatever_the_sender_encoding(variant: str) -> None:
    b64 = _deflate_b64(XML + b"<!-- make / and + likely -->" * 3)
    relay = "https://console.example/path?service=a b/c"
    if variant == "lower_hex_plus":
        req = _lower_hex(quote_plus(b64, safe=""))
        rs = _lower_hex(quote_plus(relay, safe=""))  # '+' for space, %2f, %3a
        alg = _lower_hex(quote_plus(algorithms.RSA_SHA256, safe=""))
        query, signed = _hand_signed(req, rs, alg)
    elif variant == "pct20_slash_unescaped":
        req = quote(b64, safe="/")  # '/' left as is, '+' as %2B
        rs = quote(relay, safe="/:")  # %20 for space, '/' and ':' raw
        alg = quote(algorithms.RSA_SHA256, safe="/:")
        query, signed = _hand_signed(req, rs, alg)
    else:
        req, rs = quote_plus(b64, safe=""), quote_plus(relay, safe="")
        alg = quote_plus(algorithms.RSA_SHA256, safe="")
        query, signed = _hand_signed(req, rs, alg, order="reversed", extra="&xAccountType=demo&foo")
    msg = decode_redirect(query)
    assert msg.signed_octets == signed
    assert msg.relay_state == relay
    assert msg.sig_alg == algorithms.RSA_SHA256
    assert verify_redirect_signature(msg, [_signer().certificate], required=True) is not None
    if variant != "reordered_with_extra":
        # Re-encoding the decoded values (what a naive verifier does) gives different octets.
        ours = "&".join([f"SAMLRequest={quote_plus(b64, safe='')}", f"RelayState={quote_plus(relay, safe='')}",
                         f"SigAlg={quote_plus(algorithms.RSA_SHA256, safe='')}"]).encode()
        assert ours != signed


def test_unescaped_plus_in_base64_is_read_as_plus() -> None:
    b64 = _deflate_b64(XML * 5)
    assert "+" in b64 or "/" in b64
    msg = decode_redirect("SAMLRequest=" + b64.replace("=", "%3D"))
    assert msg.xml == XML * 5


# --------------------------------------------------------------------------- independent peer


def _onelogin_settings(signer: PrivateKeySigner) -> dict[str, object]:
    key = cached_key("sp-bindings")
    idp = cached_key("idp-bindings")
    return {
        "strict": True,
        "sp": {"entityId": "https://sp.example/", "x509cert": key.cert_b64, "privateKey": key.key_pem.decode(),
               "assertionConsumerService": {"url": "https://sp.example/acs"}},
        "idp": {"entityId": "https://idp.example.com/", "x509cert": idp.cert_b64,
                "singleSignOnService": {"url": SSO}},
        "security": {"authnRequestsSigned": True, "signatureAlgorithm": signer.algorithm},
    }


def test_python3_saml_signed_redirect_verifies_with_us() -> None:
    from onelogin.saml2.auth import OneLogin_Saml2_Auth

    signer = _signer()
    request_data = {"https": "on", "http_host": "sp.example", "script_name": "/login", "get_data": {},
                    "post_data": {}}
    auth = OneLogin_Saml2_Auth(request_data, _onelogin_settings(signer))
    url = auth.login(return_to="https://console.example/ a+b/ü")
    msg = decode_redirect(_query(url))
    assert msg.relay_state == "https://console.example/ a+b/ü"
    assert b"AuthnRequest" in msg.xml
    assert verify_redirect_signature(msg, [signer.certificate], required=True) == signer.certificate


def test_our_signed_redirect_verifies_with_python3_saml() -> None:
    from onelogin.saml2.utils import OneLogin_Saml2_Utils

    signer = _signer()
    url = encode_redirect(XML, endpoint=SSO, relay_state="rs value/1", signer=signer)
    query = _query(url)
    signed_part, _, sig_raw = query.rpartition("&Signature=")
    signature = base64.b64decode(dict(parse_qsl("Signature=" + sig_raw))["Signature"])
    cert_pem = signer.certificate.public_bytes(Encoding.PEM).decode()
    assert OneLogin_Saml2_Utils.validate_binary_sign(signed_part, signature, cert_pem, signer.algorithm)
    assert not OneLogin_Saml2_Utils.validate_binary_sign(signed_part.replace("rs+value", "rs+valuf"), signature,
                                                         cert_pem, signer.algorithm)


# --------------------------------------------------------------------------- rejections


def _signed_query(relay_state: str | None = None) -> str:
    return _query(encode_redirect(XML, endpoint=SSO, relay_state=relay_state, signer=_signer()))


def test_unsigned_when_required() -> None:
    msg = decode_redirect(_query(encode_redirect(XML, endpoint=SSO)))
    with pytest.raises(SignatureError) as exc:
        verify_redirect_signature(msg, [_signer().certificate], required=True)
    assert _code(exc) == "signature_missing"


def test_signature_from_another_key() -> None:
    msg = decode_redirect(_signed_query("x"))
    with pytest.raises(SignatureError) as exc:
        verify_redirect_signature(msg, [cached_key("someone-else").certificate], required=False)
    assert _code(exc) == "signature_invalid"
    assert algorithms.fingerprint(cached_key("someone-else").certificate) in exc.value.operator


def test_tampered_relay_state_breaks_signature() -> None:
    query = _signed_query("original").replace("RelayState=original", "RelayState=evil")
    with pytest.raises(SignatureError) as exc:
        verify_redirect_signature(decode_redirect(query), [_signer().certificate], required=True)
    assert _code(exc) == "signature_invalid"


def test_dropped_relay_state_breaks_signature() -> None:
    query = _signed_query("original").replace("&RelayState=original", "")
    with pytest.raises(SignatureError) as exc:
        verify_redirect_signature(decode_redirect(query), [_signer().certificate], required=True)
    assert _code(exc) == "signature_invalid"


def test_sha1_sigalg_refused() -> None:
    req = quote_plus(_deflate_b64(XML), safe="")
    query, _ = _hand_signed(req, None, quote_plus(algorithms.RSA_SHA1, safe=""))
    with pytest.raises(SignatureError) as exc:
        verify_redirect_signature(decode_redirect(query), [_signer().certificate], required=True)
    assert _code(exc) == "sigalg_refused"
    assert "SHA-1" in exc.value.operator


@pytest.mark.parametrize("drop", ["SigAlg", "Signature"])
def test_half_a_signature(drop: str) -> None:
    query = "&".join(p for p in _signed_query().split("&") if not p.startswith(drop + "="))
    with pytest.raises(SignatureError) as exc:
        verify_redirect_signature(decode_redirect(query), [_signer().certificate], required=False)
    assert _code(exc) == "signature_incomplete"


@pytest.mark.parametrize("name", ["SAMLRequest", "RelayState", "SigAlg", "Signature"])
def test_duplicated_parameter(name: str) -> None:
    query = _signed_query("rs")
    part = next(p for p in query.split("&") if p.startswith(name + "="))
    with pytest.raises(RequestError) as exc:
        decode_redirect(query + "&" + part)
    assert _code(exc) == "duplicate_parameter"


def test_duplicated_parameter_hidden_by_percent_encoding() -> None:
    query = _signed_query()
    first = query.split("&")[0]
    with pytest.raises(RequestError) as exc:
        decode_redirect(query + "&SAML%52equest=" + first.partition("=")[2])
    assert _code(exc) == "duplicate_parameter"


def _bomb(megabytes: int) -> str:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(b"\0" * (megabytes << 20)) + c.flush()
    return "SAMLRequest=" + quote_plus(base64.b64encode(data).decode(), safe="")


def test_deflate_bomb_under_default_query_cap() -> None:
    query = _bomb(10)  # ~13.6 KiB of query
    assert len(query) < Limits().max_query_bytes
    with pytest.raises(RequestError) as exc:
        decode_redirect(query)
    assert _code(exc) == "inflate_too_large"


def test_deflate_bomb_50mb() -> None:
    query = _bomb(50)
    with pytest.raises(RequestError) as exc:
        decode_redirect(query)
    assert _code(exc) == "query_too_long"
    with pytest.raises(RequestError) as exc:
        decode_redirect(query, limits=Limits(max_query_bytes=1 << 20, max_base64_chars=1 << 20))
    assert _code(exc) == "inflate_too_large"


def test_inflated_size_limit_is_exact() -> None:
    xml = b"<a>" + b"x" * 993 + b"</a>"  # 1000 bytes
    query = "SAMLRequest=" + quote_plus(_deflate_b64(xml), safe="")
    assert decode_redirect(query, limits=Limits(max_xml_bytes=1000)).xml == xml
    with pytest.raises(RequestError) as exc:
        decode_redirect(query, limits=Limits(max_xml_bytes=999))
    assert _code(exc) == "inflate_too_large"


def test_query_too_long() -> None:
    with pytest.raises(RequestError) as exc:
        decode_redirect(_signed_query("r" * 10), limits=Limits(max_query_bytes=100))
    assert _code(exc) == "query_too_long"


def test_base64_too_long() -> None:
    with pytest.raises(RequestError) as exc:
        decode_redirect(_signed_query(), limits=Limits(max_base64_chars=50))
    assert _code(exc) == "base64_too_long"


@pytest.mark.parametrize("value", ["abc!def=", "AAAA%20BBBB", "AAA", "%ZZ" + "A" * 5, "AAAA%0A", "%FF%FE"])
def test_bad_base64(value: str) -> None:
    with pytest.raises(RequestError) as exc:
        decode_redirect("SAMLRequest=" + value)
    assert _code(exc) in {"bad_base64", "bad_encoding"}
    if "%FF" not in value:
        assert _code(exc) == "bad_base64"


def test_bad_base64_signature() -> None:
    query = _signed_query().rpartition("&Signature=")[0] + "&Signature=%%%"
    with pytest.raises(RequestError) as exc:
        decode_redirect(query)
    assert _code(exc) == "bad_base64"


def test_not_deflate_and_zlib_wrapped_refused() -> None:
    with pytest.raises(RequestError) as exc:
        decode_redirect("SAMLRequest=" + quote_plus(base64.b64encode(b"<plain/>").decode(), safe=""))
    assert _code(exc) == "inflate_failed"
    wrapped = base64.b64encode(zlib.compress(XML)).decode()
    with pytest.raises(RequestError) as exc:
        decode_redirect("SAMLRequest=" + quote_plus(wrapped, safe=""))
    assert _code(exc) == "inflate_failed"


def test_trailing_garbage_and_truncation_refused() -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = c.compress(XML) + c.flush()
    for bad in (data + b"junk", data[:-3]):
        with pytest.raises(RequestError) as exc:
            decode_redirect("SAMLRequest=" + quote_plus(base64.b64encode(bad).decode(), safe=""))
        assert _code(exc) == "inflate_failed"


def test_relay_state_limit() -> None:
    assert decode_redirect(_signed_query("r" * 1024)).relay_state == "r" * 1024
    with pytest.raises(RequestError) as exc:
        decode_redirect(_signed_query("r" * 1025))
    assert _code(exc) == "relay_state_too_long"
    assert decode_redirect(_signed_query("r" * 2000), limits=Limits(max_relay_state_bytes=4096)).relay_state


def test_raw_non_ascii_in_signed_parameter_refused() -> None:
    with pytest.raises(RequestError) as exc:
        decode_redirect(_signed_query("x").replace("RelayState=x", "RelayState=\u00e4"))
    assert _code(exc) == "bad_encoding"
    # ... but not in parameters we do not read
    assert decode_redirect(_signed_query() + "&note=\u00e4").xml == XML


def test_missing_message() -> None:
    with pytest.raises(RequestError) as exc:
        decode_redirect("RelayState=x")
    assert _code(exc) == "message_missing"


# --------------------------------------------------------------------------- POST


def test_post_round_trip_and_line_wrapped() -> None:
    value = encode_post(XML)
    assert decode_post(value) == XML
    wrapped = "\r\n".join(value[i:i + 64] for i in range(0, len(value), 64))
    assert decode_post(wrapped) == XML


@pytest.mark.parametrize("value", ["PHg+*", "PHg-Lz4=", "PHg", "<x/>"])
def test_post_bad_base64(value: str) -> None:
    with pytest.raises(RequestError) as exc:
        decode_post(value)
    assert _code(exc) == "bad_base64"


def test_post_limits() -> None:
    big = encode_post(b"x" * 3000)
    with pytest.raises(RequestError) as exc:
        decode_post(big, limits=Limits(max_post_chars=1000))
    assert _code(exc) == "base64_too_long"
    with pytest.raises(RequestError) as exc:
        decode_post(big, limits=Limits(max_xml_bytes=2999))
    assert _code(exc) == "xml_too_large"
    assert decode_post(big, limits=Limits(max_xml_bytes=3000)) == b"x" * 3000


# The Redirect binding's percent-decoding takes a shortcut for the escapes base64 and URIs are made of
# (saml/bindings.py _percent_decode); the standard library's unquote_to_bytes is the judge of every result.
_ESCAPE_PIECES = st.sampled_from(["%2B", "%2b", "%2F", "%2f", "%3D", "%3d", "%3A", "%3a", "%23", "%25", "%2", "%",
                                  "%%", "%zz", "%0A", "%E4", "+", "A", "z", "0", "9", "f", "F", "-", "_", "."])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ESCAPE_PIECES, max_size=40).map("".join))
def test_percent_decoding_is_unquote_to_bytes(raw: str) -> None:
    assert bindings._percent_decode(raw) == unquote_to_bytes(raw)
