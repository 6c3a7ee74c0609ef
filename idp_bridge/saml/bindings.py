"""SAML HTTP-Redirect and HTTP-POST bindings: bounded decoding, raw-octet signature checks, encoding.

Inbound Redirect messages are read from the RAW query string exactly as the browser sent it.
The signature (SAML bindings §3.4.4.1) covers ``SAMLRequest=<v>&RelayState=<v>&SigAlg=<v>``
built from the still percent-encoded substrings; re-encoding decoded values would break
signatures from any sender whose percent-encoding differs from ours (lower-case hex, '+' for
space, unescaped '/'), so we never do that.

Every decoder is bounded: query length, base64 length, inflated size (a DEFLATE bomb is
stopped after ``max_xml_bytes + 1`` output bytes, never inflated in full) and RelayState size.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote_plus, unquote_to_bytes

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from idp_bridge.saml.algorithms import signature_algorithm, verify_detached
from idp_bridge.saml.errors import RequestError, SignatureError

if TYPE_CHECKING:
    from idp_bridge.saml.signing import Signer


PARAM_REQUEST = "SAMLRequest"
PARAM_RESPONSE = "SAMLResponse"
_MESSAGE_PARAMS = (PARAM_REQUEST, PARAM_RESPONSE)
_SIGNED_PARAMS = ("RelayState", "SigAlg", "Signature")


@dataclass(frozen=True)
class Limits:
    """Caps applied before any expensive work. Defaults suit browser-carried SAML requests."""

    #: Whole raw query string (everything after '?').
    max_query_bytes: int = 16 * 1024
    #: Base64 text of a Redirect message or Signature, after percent-decoding.
    max_base64_chars: int = 16 * 1024
    #: Inflated (Redirect) or decoded (POST) XML.
    max_xml_bytes: int = 256 * 1024
    #: The spec says 80 bytes; real SPs send more. Decoded UTF-8 bytes.
    max_relay_state_bytes: int = 1024
    #: Base64 text of a POST form field.
    max_post_chars: int = 512 * 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class RedirectMessage:
    xml: bytes
    relay_state: str | None
    sig_alg: str | None
    signature: bytes | None
    #: The exact octets the sender signed (None when the query carries no SigAlg).
    signed_octets: bytes | None
    param: str


# The escapes a percent-encoded base64 value (and a SigAlg URI) is made of, upper- and lower-case hex.
# Replacing them with str.replace first is what unquote_to_bytes would do to them, and much faster than
# its per-escape Python loop: none of the replacements is '%' or a hex digit, so no escape is created,
# destroyed or decoded twice; whatever '%' is left is decoded by unquote_to_bytes as before.
_COMMON_ESCAPES = (("%2B", "+"), ("%2b", "+"), ("%2F", "/"), ("%2f", "/"), ("%3D", "="), ("%3d", "="),
                   ("%3A", ":"), ("%3a", ":"), ("%23", "#"))


def _percent_decode(raw: str) -> bytes:
    """``unquote_to_bytes(raw)``, with the common escapes decoded in C first."""
    if "%" in raw:
        for escape, char in _COMMON_ESCAPES:
            raw = raw.replace(escape, char)
        if "%" in raw:
            return unquote_to_bytes(raw)
    return raw.encode("utf-8")


def _split_query(raw_query: str, param: str) -> dict[str, str]:
    """Map each parameter we care about to its RAW (still percent-encoded) value; refuse duplicates."""
    wanted = (param, *_SIGNED_PARAMS)
    found: dict[str, str] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        if raw_name in wanted:
            name = raw_name  # no '%' or '+' in it: decoding would give it back unchanged
        else:
            try:
                name = unquote_to_bytes(raw_name.replace("+", " ")).decode("utf-8")
            except UnicodeDecodeError:
                continue  # not a parameter we read
        if name not in wanted:
            continue
        if not raw_value.isascii():
            raise RequestError(f"query parameter {name} holds raw non-ASCII characters; SAML values must be "
                               "percent-encoded", code="bad_encoding")
        if name in found:
            raise RequestError(f"query parameter {name} appears more than once; a message carries each "
                               "of SAMLRequest/SAMLResponse, RelayState, SigAlg and Signature at most once",
                               code="duplicate_parameter")
        found[name] = raw_value
    return found


def _unquote_ascii(raw: str, name: str, *, plus_is_space: bool) -> str:
    if plus_is_space:
        raw = raw.replace("+", " ")
    data = _percent_decode(raw)
    try:
        return data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise RequestError(f"query parameter {name} holds non-ASCII bytes after percent-decoding",
                           code="bad_encoding") from exc


def _strict_b64decode(text: str, name: str, limit: int) -> bytes:
    if len(text) > limit:
        raise RequestError(f"{name} is {len(text)} base64 characters; the limit is {limit}",
                           code="base64_too_long")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{name} is not valid base64 ({exc}); first 40 characters: {text[:40]!r}",
                           code="bad_base64") from exc


def _inflate(data: bytes, limit: int, name: str) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise RequestError(f"{name} is not raw DEFLATE data ({exc}); the HTTP-Redirect binding "
                           "requires DEFLATE without zlib header", code="inflate_failed") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise RequestError(f"{name} inflates to more than {limit} bytes ({len(data)} compressed bytes); "
                           "refused as a possible DEFLATE bomb", code="inflate_too_large")
    if not inflater.eof:
        raise RequestError(f"{name} is a truncated DEFLATE stream", code="inflate_failed")
    if inflater.unused_data:
        raise RequestError(f"{name} carries {len(inflater.unused_data)} bytes after the end of the "
                           "DEFLATE stream", code="inflate_failed")
    return out


def decode_redirect(raw_query: str, *, param: str = PARAM_REQUEST,
                    limits: Limits = DEFAULT_LIMITS) -> RedirectMessage:
    """Decode an HTTP-Redirect message from the raw query string (everything after '?').

    Pass the query exactly as received, e.g. ``request.query_string.decode("latin-1")`` in Flask
    (never a re-encoded ``request.args``). The parameters read here must be pure ASCII, as the
    binding percent-encodes them, so the choice of single-byte decoding cannot change the signed
    octets. Other parameters (``xAccountType`` ...) are ignored.
    """
    if param not in _MESSAGE_PARAMS:
        raise ValueError(f"param must be one of {_MESSAGE_PARAMS}, not {param!r}")
    if len(raw_query) > limits.max_query_bytes:
        raise RequestError(f"query string is {len(raw_query)} bytes; the limit is {limits.max_query_bytes}",
                           code="query_too_long")
    raw = _split_query(raw_query, param)
    if param not in raw or not raw[param]:
        raise RequestError(f"query string has no {param} parameter", code="message_missing")

    b64 = _unquote_ascii(raw[param], param, plus_is_space=False)
    # A literal '+' in a base64 value is kept as '+': base64 never contains spaces, so reading
    # '+' as a plus sign is the only interpretation that can succeed.
    xml = _inflate(_strict_b64decode(b64, param, limits.max_base64_chars), limits.max_xml_bytes, param)

    relay_state: str | None = None
    if "RelayState" in raw:
        rs_bytes = _percent_decode(raw["RelayState"].replace("+", " "))
        if len(rs_bytes) > limits.max_relay_state_bytes:
            raise RequestError(f"RelayState is {len(rs_bytes)} bytes; the limit is "
                               f"{limits.max_relay_state_bytes}", code="relay_state_too_long")
        try:
            relay_state = rs_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError("RelayState is not UTF-8 after percent-decoding",
                               code="bad_encoding") from exc

    sig_alg = _unquote_ascii(raw["SigAlg"], "SigAlg", plus_is_space=True) if "SigAlg" in raw else None
    signature = None
    if "Signature" in raw:
        sig_b64 = _unquote_ascii(raw["Signature"], "Signature", plus_is_space=False)
        signature = _strict_b64decode(sig_b64, "Signature", limits.max_base64_chars)

    signed_octets = None
    if "SigAlg" in raw:
        parts = [f"{param}={raw[param]}"]
        if "RelayState" in raw:
            parts.append(f"RelayState={raw['RelayState']}")
        parts.append(f"SigAlg={raw['SigAlg']}")
        signed_octets = "&".join(parts).encode("utf-8")

    return RedirectMessage(xml=xml, relay_state=relay_state, sig_alg=sig_alg, signature=signature,
                           signed_octets=signed_octets, param=param)


def verify_redirect_signature(msg: RedirectMessage, certificates: Sequence[x509.Certificate], *,
                              required: bool) -> x509.Certificate | None:
    """Check the query signature; return the certificate that verified, or None if unsigned and allowed.

    A signature that is present is always checked, even when not required.
    """
    if msg.signature is None and msg.sig_alg is None:
        if required:
            raise SignatureError(f"{msg.param} carries no Signature/SigAlg, but this SP's requests must be "
                                 "signed (AuthnRequestsSigned)", code="signature_missing")
        return None
    if msg.signature is None:
        raise SignatureError(f"query has SigAlg {msg.sig_alg!r} but no Signature", code="signature_incomplete")
    if msg.sig_alg is None or msg.signed_octets is None:
        raise SignatureError("query has a Signature but no SigAlg", code="signature_incomplete")
    algorithm = signature_algorithm(msg.sig_alg)
    if algorithm.kind == "ecdsa" and msg.signature and len(msg.signature) % 2 == 0:
        # XML-DSig style r||s (what our Signer produces); cryptography verifies DER. Senders that
        # put DER in the query still verify through the fallback below.
        half = len(msg.signature) // 2
        der = encode_dss_signature(int.from_bytes(msg.signature[:half], "big"),
                                   int.from_bytes(msg.signature[half:], "big"))
        with contextlib.suppress(SignatureError):
            return verify_detached(der, msg.signed_octets, algorithm, certificates)
    return verify_detached(msg.signature, msg.signed_octets, algorithm, certificates)


def _deflate_b64(xml: bytes) -> str:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(compressor.compress(xml) + compressor.flush()).decode("ascii")


def encode_redirect(xml: bytes, *, endpoint: str, param: str = PARAM_REQUEST, relay_state: str | None = None,
                    signer: Signer | None = None) -> str:
    """Build a full HTTP-Redirect URL, percent-encoded like a typical Java SP (form encoding, upper-case hex)."""
    if param not in _MESSAGE_PARAMS:
        raise ValueError(f"param must be one of {_MESSAGE_PARAMS}, not {param!r}")
    query = f"{param}={quote_plus(_deflate_b64(xml), safe='')}"
    if relay_state is not None:
        query += f"&RelayState={quote_plus(relay_state, safe='')}"
    if signer is not None:
        query += f"&SigAlg={quote_plus(signer.algorithm, safe='')}"
        signature = signer.sign(query.encode("ascii"))
        query += f"&Signature={quote_plus(base64.b64encode(signature).decode('ascii'), safe='')}"
    sep = "" if endpoint.endswith(("?", "&")) else "&" if "?" in endpoint else "?"
    return f"{endpoint}{sep}{query}"


def encode_post(xml: bytes) -> str:
    """Base64 for an HTTP-POST form field (one line)."""
    return base64.b64encode(xml).decode("ascii")


_FORM_WHITESPACE = str.maketrans("", "", " \t\r\n")


def decode_post(value: str, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Decode an HTTP-POST form field. Line breaks are dropped (many SPs wrap base64 at 64/76
    columns); anything else outside the base64 alphabet is refused."""
    if len(value) > limits.max_post_chars:
        raise RequestError(f"POST field is {len(value)} characters; the limit is {limits.max_post_chars}",
                           code="base64_too_long")
    data = _strict_b64decode(value.translate(_FORM_WHITESPACE), "POST field", limits.max_post_chars)
    if len(data) > limits.max_xml_bytes:
        raise RequestError(f"POST field decodes to {len(data)} bytes; the limit is {limits.max_xml_bytes}",
                           code="xml_too_large")
    return data
