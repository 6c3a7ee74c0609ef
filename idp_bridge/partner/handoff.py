"""Platform hand-off tokens: the partner platform's signed word for who is logged in (sans-I/O).

A hand-off token is a JWT signed by the platform with HS256 (shared secret) or RS256/ES256 (the
platform's private key; we hold its public key). Checks, in order, each with its own error code:

- header: ``alg`` must be one the configured keys are pinned to (``none`` and anything else are
  refused before any key is touched; an HS256 token is never checked with a public key, and an
  RS/ES token never with the shared secret, which rules out algorithm confusion);
- signature (PyJWT, with ``algorithms=[the one algorithm of the chosen key]``);
- ``aud`` equals our entity ID;
- ``iat`` present and not in the future, ``nbf`` if present, ``exp`` present, not past and at most
  ``max_lifetime`` ahead of now;
- ``jti`` and ``sub`` present and bounded.

Claiming ``jti`` once is the caller's job (``IdentityProvider.accept_handoff``), since it needs the store.
Times are checked here against the caller's ``now`` (not PyJWT's wall clock), so tests own the clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from idp_bridge.errors import ConfigError, RequestError
from idp_bridge.huawei.attributes import Customer

MAX_TOKEN_LENGTH = 8192
MAX_CLAIM_LENGTH = {"sub": 128, "jti": 256, "email": 320, "name": 256, "mobile": 64, "iss": 256}
_HMAC = "HS256"


class HandoffError(RequestError):
    """A hand-off token was refused. ``code`` says which check failed."""

    code = "handoff_invalid"
    status = 400


@dataclass(frozen=True)
class HandoffKeys:
    """The keys a platform may sign hand-off tokens with; each pinned to exactly one algorithm."""

    hs256_secret: bytes | None = None
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = None
    public_key_algorithm: str | None = None  # RS256 or ES256

    def __post_init__(self) -> None:
        if self.public_key is not None:
            want = {"RS256": rsa.RSAPublicKey, "ES256": ec.EllipticCurvePublicKey}.get(
                self.public_key_algorithm or "")
            if want is None or not isinstance(self.public_key, want):
                raise ConfigError(f"hand-off public key is a {type(self.public_key).__name__} but the configured "
                                  f"algorithm is {self.public_key_algorithm!r}; use RS256 with an RSA key or "
                                  "ES256 with a P-256 key", code="handoff_key_mismatch")
        if self.hs256_secret is not None and len(self.hs256_secret) < 32:
            raise ConfigError("hand-off HS256 secret is shorter than 32 bytes", code="config_secret")

    @property
    def algorithms(self) -> tuple[str, ...]:
        algs: list[str] = []
        if self.hs256_secret is not None:
            algs.append(_HMAC)
        if self.public_key is not None and self.public_key_algorithm:
            algs.append(self.public_key_algorithm)
        return tuple(algs)

    @classmethod
    def from_settings(cls, *, secret: str | None, public_key_file: Path | None,
                      public_key_algorithm: str | None) -> HandoffKeys:
        key: Any = None
        if public_key_file is not None:
            try:
                key = load_pem_public_key(public_key_file.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"platform.handoff_public_key: cannot read a PEM public key from "
                                  f"{str(public_key_file)!r}: {exc}", code="config_key_file") from exc
        return cls(hs256_secret=secret.encode() if secret else None, public_key=key,
                   public_key_algorithm=public_key_algorithm if key is not None else None)


@dataclass(frozen=True)
class HandoffClaims:
    customer: Customer
    jti: str
    issuer: str | None
    expires_at: dt.datetime
    algorithm: str


def verify_handoff_token(token: str, *, keys: HandoffKeys, audience: str, now: dt.datetime,
                         max_lifetime: dt.timedelta = dt.timedelta(minutes=5),
                         leeway: dt.timedelta = dt.timedelta(seconds=60)) -> HandoffClaims:
    """Verify a hand-off JWT and return the customer it names. Raises HandoffError."""
    if not keys.algorithms:
        raise HandoffError("no hand-off key is configured: set IDP_BRIDGE_HANDOFF_SECRET (HS256) or "
                           "platform.handoff_public_key (RS256/ES256)", code="handoff_not_configured", status=500)
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise HandoffError(f"hand-off token missing or longer than {MAX_TOKEN_LENGTH} characters "
                           f"(got {len(token or '')})", code="handoff_malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise HandoffError(f"hand-off token is not a JWT: {exc}", code="handoff_malformed") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in keys.algorithms:
        raise HandoffError(f"hand-off token algorithm {alg!r} is not accepted; configured: "
                           f"{', '.join(keys.algorithms)} (alg 'none' and unconfigured algorithms are refused)",
                           code="handoff_alg_refused")
    key: Any = keys.hs256_secret if alg == _HMAC else keys.public_key
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key=key, algorithms=[alg], audience=audience,
            options={"require": ["aud", "exp", "iat", "jti", "sub"], "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False})
    except jwt.InvalidSignatureError:
        raise HandoffError(f"hand-off token signature ({alg}) does not verify with the configured "
                           f"{'shared secret' if alg == _HMAC else 'platform public key'}",
                           code="handoff_signature") from None
    except jwt.InvalidAudienceError:
        raise HandoffError(f"hand-off token audience is {_peek(token, 'aud')!r}; expected our entity ID "
                           f"{audience!r}", code="handoff_audience") from None
    except jwt.MissingRequiredClaimError as exc:
        raise HandoffError(f"hand-off token has no {exc.claim!r} claim; required: aud, exp, iat, jti, sub",
                           code="handoff_claims") from None
    except jwt.InvalidTokenError as exc:
        raise HandoffError(f"hand-off token refused: {exc}", code="handoff_malformed") from None
    iat, exp = _time(claims, "iat"), _time(claims, "exp")
    nbf = _time(claims, "nbf") if "nbf" in claims else None
    if iat > now + leeway or (nbf is not None and nbf > now + leeway):
        raise HandoffError(f"hand-off token is not yet valid: iat {iat.isoformat()}"
                           + (f", nbf {nbf.isoformat()}" if nbf else "")
                           + f", now {now.isoformat()} (leeway {int(leeway.total_seconds())} s); check the "
                           "platform's clock", code="handoff_not_yet_valid")
    if exp <= now - leeway:
        raise HandoffError(f"hand-off token expired at {exp.isoformat()}; now {now.isoformat()} "
                           f"(leeway {int(leeway.total_seconds())} s)", code="handoff_expired")
    if exp - now > max_lifetime + leeway or exp - iat > max_lifetime + leeway:
        raise HandoffError(f"hand-off token lives too long: iat {iat.isoformat()}, exp {exp.isoformat()}, now "
                           f"{now.isoformat()}; exp must be at most {int(max_lifetime.total_seconds())} s ahead",
                           code="handoff_lifetime")
    text = {name: _text(claims, name) for name in MAX_CLAIM_LENGTH}
    sub, jti = text["sub"], text["jti"]
    if not sub or not jti:
        raise HandoffError("hand-off token 'sub' (the customer's xUserId) and 'jti' must be non-empty strings",
                           code="handoff_claims")
    bound = claims.get("bound")
    if bound is not None and not isinstance(bound, bool):
        raise HandoffError(f"hand-off token claim 'bound' is {bound!r}; expected true or false",
                           code="handoff_claims")
    customer = Customer(user_id=sub, email=text["email"], name=text["name"], mobile=text["mobile"], bound=bound)
    return HandoffClaims(customer, jti, text["iss"], exp, alg)


def _time(claims: Mapping[str, Any], name: str) -> dt.datetime:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HandoffError(f"hand-off token claim {name!r} is {value!r}; expected seconds since the epoch",
                           code="handoff_claims")
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise HandoffError(f"hand-off token claim {name!r} = {value!r} is out of range",
                           code="handoff_claims") from None


def _text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    limit = MAX_CLAIM_LENGTH[name]
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 for c in value):
        raise HandoffError(f"hand-off token claim {name!r} must be a string of at most {limit} printable "
                           f"characters", code="handoff_claims")
    return value or None


def _peek(token: str, name: str) -> Any:
    """A claim read without verification, only to name it in an error message."""
    try:
        return jwt.decode(token, options={"verify_signature": False}).get(name)
    except jwt.InvalidTokenError:
        return None
