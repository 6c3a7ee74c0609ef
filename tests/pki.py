"""Test keys and certificates, generated at test time (no private key is ever committed)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestKey:
    __test__ = False  # not a test class, despite the name

    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def cert_b64(self) -> str:
        """The certificate as it appears in metadata / KeyInfo (base64 DER, one line)."""
        return "".join(self.cert_pem.decode().strip().splitlines()[1:-1])


def make_key(cn: str = "test", *, bits: int = 2048, curve: bool = False, days: int = 365,
             not_before: dt.datetime | None = None) -> TestKey:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = ec.generate_private_key(ec.SECP256R1()) if curve else rsa.generate_private_key(65537, bits)
    start = not_before or (dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return TestKey(key, cert)


@cache
def cached_key(name: str, bits: int = 2048) -> TestKey:
    """One key per name per test session (RSA generation is slow)."""
    return make_key(name, bits=bits)
