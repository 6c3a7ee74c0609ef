"""Hand-off tokens: every refusal has its own code and a message naming what was expected."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from idp_bridge.errors import ConfigError
from idp_bridge.partner.handoff import HandoffError, HandoffKeys, verify_handoff_token
from tests.pki import cached_key, make_key

AUD = "http://127.0.0.1:5000/saml/metadata"
SECRET = b"s" * 40
NOW = dt.datetime(2026, 5, 10, 12, 0, tzinfo=dt.UTC)
RSA = cached_key("platform-rs256")
EC = make_key("platform-es256", curve=True)


def token(key: object = SECRET, alg: str = "HS256", *, iat: dt.datetime | None = NOW, lifetime: int = 120,
          **claims: object) -> str:
    start = int((iat or NOW).timestamp())
    payload: dict[str, object] = {"sub": "cust-1", "aud": AUD, "iat": start, "exp": start + lifetime, "jti": "j-1",
                                  "email": "c1@shop.example"}
    payload.update(claims)
    if iat is None:
        payload["iat"] = None
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg)  # type: ignore[arg-type]


def verify(tok: str, keys: HandoffKeys | None = None, now: dt.datetime = NOW) -> object:
    return verify_handoff_token(tok, keys=keys or HandoffKeys(hs256_secret=SECRET), audience=AUD, now=now)


def refused(tok: str, code: str, keys: HandoffKeys | None = None, now: dt.datetime = NOW) -> HandoffError:
    with pytest.raises(HandoffError) as info:
        verify(tok, keys, now)
    assert info.value.code == code, info.value.operator
    return info.value


def test_hs256_token_gives_the_customer() -> None:
    claims = verify_handoff_token(token(name="Cee", mobile="0086-1", bound=True), keys=HandoffKeys(hs256_secret=SECRET),
                                  audience=AUD, now=NOW)
    c = claims.customer
    assert (c.user_id, c.email, c.name, c.mobile, c.bound) == ("cust-1", "c1@shop.example", "Cee", "0086-1", True)
    assert claims.jti == "j-1" and claims.algorithm == "HS256"


@pytest.mark.parametrize("key,alg", [(RSA, "RS256"), (EC, "ES256")])
def test_public_key_tokens(key: object, alg: str) -> None:
    keys = HandoffKeys(public_key=key.private_key.public_key(), public_key_algorithm=alg)  # type: ignore[attr-defined]
    assert verify_handoff_token(token(key.private_key, alg), keys=keys, audience=AUD,  # type: ignore[attr-defined]
                                now=NOW).customer.user_id == "cust-1"


def test_expired() -> None:
    err = refused(token(iat=NOW - dt.timedelta(minutes=10)), "handoff_expired")
    assert "expired at 2026-05-10T11:52:00" in err.operator


def test_not_yet_valid() -> None:
    refused(token(iat=NOW + dt.timedelta(minutes=5)), "handoff_not_yet_valid")
    refused(token(nbf=int((NOW + dt.timedelta(minutes=4)).timestamp())), "handoff_not_yet_valid")


def test_lifetime_over_five_minutes() -> None:
    refused(token(lifetime=3600), "handoff_lifetime")


def test_wrong_audience() -> None:
    err = refused(token(aud="https://other.example/saml/metadata"), "handoff_audience")
    assert "https://other.example/saml/metadata" in err.operator and AUD in err.operator


def test_wrong_key() -> None:
    refused(token(b"t" * 40), "handoff_signature")
    keys = HandoffKeys(public_key=RSA.private_key.public_key(), public_key_algorithm="RS256")
    refused(token(make_key("other").private_key, "RS256"), "handoff_signature", keys)


def test_alg_none_refused() -> None:
    unsigned = jwt.encode({"sub": "cust-1", "aud": AUD, "iat": int(NOW.timestamp()), "exp": int(NOW.timestamp()) + 60,
                           "jti": "n"}, "", algorithm="none")
    err = refused(unsigned, "handoff_alg_refused")
    assert "'none'" in err.operator
    # hand-built variants: 'None', 'NONE', empty signature
    for alg in ("None", "NONE", "nOnE"):
        header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "typ": "JWT"}).encode()).rstrip(b"=").decode()
        refused(header + "." + unsigned.split(".")[1] + ".", "handoff_alg_refused")


def test_hs_rs_confusion_refused() -> None:
    """An HS256 token keyed with the platform's public key PEM: never checked with the public key."""
    pem = RSA.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = _hmac_token(pem)  # PyJWT itself refuses to HMAC with a PEM key, so build it by hand
    rs_only = HandoffKeys(public_key=RSA.private_key.public_key(), public_key_algorithm="RS256")
    refused(forged, "handoff_alg_refused", rs_only)
    both = HandoffKeys(hs256_secret=SECRET, public_key=RSA.private_key.public_key(), public_key_algorithm="RS256")
    refused(forged, "handoff_signature", both)  # checked with the shared secret only, so it fails
    # and the other way round: an RS256 token offered where only HS256 is configured
    refused(token(RSA.private_key, "RS256"), "handoff_alg_refused")
    # ES256 token where the key is pinned to RS256
    refused(token(EC.private_key, "ES256"), "handoff_alg_refused", rs_only)


def _hmac_token(secret: bytes) -> str:
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "cust-1", "aud": AUD, "iat": int(NOW.timestamp()),
                           "exp": int(NOW.timestamp()) + 60, "jti": "x"}).encode())
    sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


@pytest.mark.parametrize("missing", ["sub", "jti", "iat", "exp", "aud"])
def test_required_claims(missing: str) -> None:
    refused(token(**cast("dict[str, Any]", {missing: None})) if missing != "iat" else token(iat=None), "handoff_claims")


def test_claim_types_and_bounds() -> None:
    refused(token(sub="x" * 200), "handoff_claims")
    refused(token(bound="yes"), "handoff_claims")
    refused(token(sub=""), "handoff_claims")
    refused("not-a-jwt", "handoff_malformed")
    refused("a" * 9000, "handoff_malformed")


def test_nothing_configured_is_a_server_error() -> None:
    with pytest.raises(HandoffError) as info:
        verify(token(), HandoffKeys())
    assert info.value.code == "handoff_not_configured" and info.value.status == 500


def test_key_must_match_its_algorithm(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        HandoffKeys(public_key=EC.private_key.public_key(), public_key_algorithm="RS256")
    with pytest.raises(ConfigError):
        HandoffKeys(hs256_secret=b"short")
    bad = tmp_path / "k.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError):
        HandoffKeys.from_settings(secret=None, public_key_file=bad, public_key_algorithm="RS256")
