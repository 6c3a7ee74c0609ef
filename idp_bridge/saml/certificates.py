"""The one loader for certificates: the ones a peer wrote into XML (ds:X509Certificate: base64 of DER)
and our own PEM files.

Rule: whitespace inside the base64 is dropped (metadata wraps it), anything else outside the base64
alphabet is refused, the text is bounded before decoding, and a failure is a ValueError naming what
arrived; callers turn it into their own typed error (MetadataError, SignatureError …).
"""

from __future__ import annotations

import base64
import binascii

from cryptography import x509

#: A DER certificate above ~12 KB is not one anybody signs SAML with.
MAX_CERTIFICATE_B64 = 16 * 1024


def load_certificate_b64(text: str | None, *, max_chars: int = MAX_CERTIFICATE_B64) -> x509.Certificate:
    """Parse the text of a ds:X509Certificate. Raises ValueError (with the reason) if it is not one."""
    compact = "".join((text or "").split())
    if not compact:
        raise ValueError("the X509Certificate is empty")
    if len(compact) > max_chars:
        raise ValueError(f"the X509Certificate is {len(compact)} base64 characters; the limit is {max_chars}")
    try:
        der = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64 ({exc}); starts with {compact[:32]!r}") from exc
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ValueError(f"not a DER X.509 certificate ({exc}); starts with {compact[:32]!r}") from exc


#: A PEM certificate file (maybe with a chain) larger than this is not a certificate file.
MAX_CERTIFICATE_PEM = 64 * 1024


def load_certificate_pem(data: bytes, *, max_bytes: int = MAX_CERTIFICATE_PEM) -> x509.Certificate:
    """Parse a PEM certificate (the first one of the file). Raises ValueError (with the reason) if it is not one."""
    if len(data) > max_bytes:
        raise ValueError(f"{len(data)} bytes; a PEM certificate file is at most {max_bytes}")
    return x509.load_pem_x509_certificate(data)
