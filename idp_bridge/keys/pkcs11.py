"""Signing with a key held in a PKCS#11 token (an HSM, or SoftHSM2 in tests) via ``python-pkcs11``.

The private key never leaves the token: we send the bytes to sign and the token runs the whole
RSA PKCS#1 v1.5 SHA-256 (``CKM_SHA256_RSA_PKCS``) operation, or ECDSA (``CKM_ECDSA`` over the
SHA-256 digest, which returns ``r || s`` as XML-DSig wants). The certificate is an ordinary file; on start the
token's public key (RSA modulus; EC curve and point) must match it, so a wrong key label or certificate fails closed.

Config (``[[keys.pkcs11]]``): ``module`` (e.g. /usr/lib/softhsm/libsofthsm2.so), ``token_label``,
``key_label``, ``certificate`` (PEM), ``pin_env`` (environment variable holding the user PIN).
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from idp_bridge.config import Pkcs11KeyConfig
from idp_bridge.errors import KeyRingError, SigningKeyError
from idp_bridge.keys.files import check_certificate_key, key_id_for
from idp_bridge.saml import algorithms
from idp_bridge.saml.certificates import load_certificate_pem

_LIBS: dict[str, Any] = {}
_LOGINS: dict[tuple[str, str], str] = {}
_LIBS_LOCK = threading.Lock()


def _lib(module: Path) -> Any:
    import pkcs11

    with _LIBS_LOCK:  # a PKCS#11 module is initialised once per process
        if str(module) not in _LIBS:
            try:
                _LIBS[str(module)] = pkcs11.lib(str(module))
            except Exception as exc:
                raise KeyRingError(f"PKCS#11 module {str(module)!r} cannot be loaded: {exc}",
                                code="hsm_module") from exc
        return _LIBS[str(module)]


class Pkcs11Signer:
    """A :class:`idp_bridge.saml.signing.Signer` whose private key stays in a PKCS#11 token."""

    def __init__(self, *, module: Path, token_label: str, key_label: str, pin: str,
                 certificate: x509.Certificate) -> None:
        import pkcs11
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

        check_certificate_key(certificate, f"PKCS#11 key {key_label!r}")
        public = certificate.public_key()
        where = f"PKCS#11 token {token_label!r} key {key_label!r}"
        try:
            token = _lib(module).get_token(token_label=token_label)
            login = (str(module), token_label)
            try:
                self._session = token.open(user_pin=pin)
                _LOGINS[login] = pin
            except pkcs11.exceptions.UserAlreadyLoggedIn:
                # A login is per process and token: share it, but only with the PIN that logged in.
                if not hmac.compare_digest(_LOGINS.get(login, ""), pin):
                    raise KeyRingError(f"{where}: the PIN differs from the one this process logged in with",
                                    code="hsm_key") from None
                self._session = token.open()
            key = self._session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=key_label)
        except (KeyRingError, SigningKeyError):
            raise
        except Exception as exc:  # python-pkcs11 raises PKCS11Error subclasses and plain RuntimeErrors
            raise KeyRingError(f"{where}: cannot open or find the private key: {type(exc).__name__} {exc}",
                            code="hsm_key") from exc
        self._key = key
        self._prehash = False
        self._lock = threading.Lock()  # one session, used by one thread at a time
        if isinstance(public, rsa.RSAPublicKey):
            if key.key_type != KeyType.RSA:
                raise KeyRingError(f"{where} is {key.key_type.name}; the certificate holds an RSA key",
                                code="key_cert_mismatch")
            self._check_rsa_match(where, public, pkcs11, Attribute, ObjectClass)
            self._mechanism = Mechanism.SHA256_RSA_PKCS
            self.algorithm = algorithms.RSA_SHA256
        elif isinstance(public, ec.EllipticCurvePublicKey):
            if key.key_type != KeyType.EC:
                raise KeyRingError(f"{where} is {key.key_type.name}; the certificate holds an ECDSA key",
                                code="key_cert_mismatch")
            self._check_ec_match(where, public, pkcs11, ObjectClass)
            # CKM_ECDSA over a SHA-256 digest made here: SoftHSM2 (and many HSMs) lack CKM_ECDSA_SHA256, and
            # hashing needs no secret - the private-key operation still runs only in the token.
            self._mechanism = Mechanism.ECDSA
            self._prehash = True
            self.algorithm = algorithms.ECDSA_SHA256
        self.certificate = certificate
        self.key_id = key_id_for(certificate)

    def _check_rsa_match(self, where: str, public: rsa.RSAPublicKey, pkcs11: Any, attribute: Any,
                         object_class: Any) -> None:
        """The token's public key (by the same label) must be the certificate's key."""
        try:
            token_public = self._session.get_key(object_class=object_class.PUBLIC_KEY, label=self._key.label)
            modulus = int.from_bytes(token_public[attribute.MODULUS], "big")
        except pkcs11.PKCS11Error as exc:
            raise KeyRingError(f"{where}: no public key with the same label to check against the certificate "
                            f"({type(exc).__name__})", code="hsm_key") from exc
        if modulus != public.public_numbers().n:
            raise KeyRingError(f"{where}: the token's key does not match the certificate", code="key_cert_mismatch")

    def _check_ec_match(self, where: str, public: ec.EllipticCurvePublicKey, pkcs11: Any,
                        object_class: Any) -> None:
        """The token's EC public key (by the same label: curve and point) must be the certificate's key."""
        from pkcs11.util.ec import encode_ec_public_key

        try:
            token_public = self._session.get_key(object_class=object_class.PUBLIC_KEY, label=self._key.label)
            token_key = serialization.load_der_public_key(encode_ec_public_key(token_public))
        except pkcs11.PKCS11Error as exc:
            raise KeyRingError(f"{where}: no public key with the same label to check against the certificate "
                            f"({type(exc).__name__})", code="hsm_key") from exc
        except ValueError as exc:  # EC_PARAMS/EC_POINT that do not decode, or an unsupported curve
            raise KeyRingError(f"{where}: the token's EC public key cannot be read: {exc}", code="hsm_key") from exc
        if not isinstance(token_key, ec.EllipticCurvePublicKey) or token_key.curve.name != public.curve.name:
            got = token_key.curve.name if isinstance(token_key, ec.EllipticCurvePublicKey) else "not EC"
            raise KeyRingError(f"{where}: the token's key is on curve {got}; the certificate's on {public.curve.name}",
                            code="key_cert_mismatch")
        if token_key.public_numbers() != public.public_numbers():
            raise KeyRingError(f"{where}: the token's key does not match the certificate", code="key_cert_mismatch")

    def sign(self, data: bytes) -> bytes:
        if self._prehash:
            digest = hashes.Hash(hashes.SHA256())
            digest.update(data)
            data = digest.finalize()
        with self._lock:
            return bytes(self._key.sign(data, mechanism=self._mechanism))


def signer_from_config(item: Pkcs11KeyConfig, environ: Mapping[str, str] | None = None) -> Pkcs11Signer:
    env = os.environ if environ is None else environ
    pin = env.get(item.pin_env)
    if not pin:
        raise KeyRingError(f"PKCS#11 key {item.key_label!r}: the PIN environment variable {item.pin_env} is not set",
                        code="hsm_pin")
    try:
        cert = load_certificate_pem(item.certificate.read_bytes())
    except (OSError, ValueError) as exc:
        raise KeyRingError(f"PKCS#11 key {item.key_label!r}: certificate {str(item.certificate)!r} cannot be read "
                        f"as PEM: {exc}", code="key_cert_unreadable") from exc
    return Pkcs11Signer(module=item.module, token_label=item.token_label, key_label=item.key_label, pin=pin,
                        certificate=cert)


def open_configured(items: Sequence[Pkcs11KeyConfig], environ: Mapping[str, str] | None = None,
                    ) -> tuple[list[Pkcs11Signer], dict[str, KeyRingError]]:
    """Every configured token key: the signers that opened, and why the others did not (by key id - the
    certificate's, or ``pkcs11:LABEL`` when even that cannot be read)."""
    signers: list[Pkcs11Signer] = []
    failures: dict[str, KeyRingError] = {}
    for item in items:
        try:
            signers.append(signer_from_config(item, environ))
        except (KeyRingError, SigningKeyError) as exc:
            try:
                kid = key_id_for(load_certificate_pem(item.certificate.read_bytes()))
            except (OSError, ValueError):
                kid = f"pkcs11:{item.key_label}"
            failures[kid] = exc if isinstance(exc, KeyRingError) else KeyRingError(exc.operator, code=exc.code)
    return signers, failures

