"""saml/certificates.py: the one certificate loader (XML base64 DER and our PEM files), bounded."""

from __future__ import annotations

import pytest

from idp_bridge.saml.certificates import MAX_CERTIFICATE_B64, load_certificate_b64, load_certificate_pem
from tests.pki import cached_key


def test_loads_wrapped_base64_and_pem() -> None:
    key = cached_key("idp")
    wrapped = "\n  ".join(key.cert_b64[i:i + 64] for i in range(0, len(key.cert_b64), 64))
    assert load_certificate_b64(f"\n  {wrapped}\n") == key.certificate
    assert load_certificate_pem(key.cert_pem) == key.certificate


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"), (None, "empty"), ("not*base64", "not base64"), ("QUJD", "not a DER X.509 certificate"),
    ("A" * (MAX_CERTIFICATE_B64 + 4), "the limit is"),
])
def test_refuses_what_is_not_a_certificate(text: str | None, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        load_certificate_b64(text)


def test_pem_is_bounded() -> None:
    with pytest.raises(ValueError, match="at most"):
        load_certificate_pem(cached_key("idp").cert_pem + b"\n" * (64 * 1024))
    with pytest.raises(ValueError):
        load_certificate_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
