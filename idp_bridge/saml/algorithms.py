"""Signature and digest algorithms the bridge accepts, and raw (detached) signature checks.

SHA-1 is refused everywhere: it is not in these tables, so it cannot be looked up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from idp_bridge.saml.errors import SignatureError

RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"

DIGEST_SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
DIGEST_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#sha384"
DIGEST_SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"

C14N_EXCLUSIVE = "http://www.w3.org/2001/10/xml-exc-c14n#"
TRANSFORM_ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"


@dataclass(frozen=True)
class SignatureAlgorithm:
    uri: str
    kind: str  # "rsa" or "ecdsa"
    hash: type[hashes.HashAlgorithm]


SIGNATURE_ALGORITHMS: dict[str, SignatureAlgorithm] = {
    RSA_SHA256: SignatureAlgorithm(RSA_SHA256, "rsa", hashes.SHA256),
    RSA_SHA384: SignatureAlgorithm(RSA_SHA384, "rsa", hashes.SHA384),
    RSA_SHA512: SignatureAlgorithm(RSA_SHA512, "rsa", hashes.SHA512),
    ECDSA_SHA256: SignatureAlgorithm(ECDSA_SHA256, "ecdsa", hashes.SHA256),
}

DIGEST_ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    DIGEST_SHA256: hashes.SHA256,
    DIGEST_SHA384: hashes.SHA384,
    DIGEST_SHA512: hashes.SHA512,
}


def signature_algorithm(uri: str | None, *, accepted: Sequence[str] | None = None) -> SignatureAlgorithm:
    """Look up a SigAlg / SignatureMethod URI, refusing SHA-1 and anything unknown."""
    if not uri:
        raise SignatureError("no signature algorithm given; expected one of "
                             + ", ".join(accepted or SIGNATURE_ALGORITHMS), code="sigalg_missing")
    allowed = accepted if accepted is not None else list(SIGNATURE_ALGORITHMS)
    if uri not in SIGNATURE_ALGORITHMS or uri not in allowed:
        reason = "SHA-1 is refused" if "sha1" in uri.lower() else "not accepted"
        raise SignatureError(f"signature algorithm {uri!r} is {reason}; expected one of "
                             + ", ".join(allowed), code="sigalg_refused")
    return SIGNATURE_ALGORITHMS[uri]


# Certificates are immutable and hashable; the same few (each SP's signing certificates) are used on every
# request, so their fingerprint and parsed public key are computed once each.
@lru_cache(maxsize=1024)
def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated upper-case hex (what operators compare)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


@lru_cache(maxsize=1024)
def _public_key(cert: x509.Certificate) -> object:
    return cert.public_key()


def verify_detached(signature: bytes, data: bytes, algorithm: SignatureAlgorithm,
                    certificates: Sequence[x509.Certificate]) -> x509.Certificate:
    """Verify ``signature`` over ``data`` with any of ``certificates``; return the one that verified.

    Raises SignatureError naming every fingerprint tried when none verifies.
    """
    if not certificates:
        raise SignatureError("no signing certificate is configured for this peer",
                             code="signature_no_certificate")
    for cert in certificates:
        key = _public_key(cert)
        try:
            if algorithm.kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, data, padding.PKCS1v15(), algorithm.hash())
                return cert
            if algorithm.kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, data, ec.ECDSA(algorithm.hash()))
                return cert
        except InvalidSignature:
            continue
    tried = ", ".join(fingerprint(c) for c in certificates)
    raise SignatureError(f"signature ({algorithm.uri}) does not verify with any configured "
                         f"certificate (SHA-256 fingerprints tried: {tried})", code="signature_invalid")
