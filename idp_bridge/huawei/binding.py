"""Huawei's binding notification (shared spec §5), verified and decoded (sans-I/O).

Huawei POSTs, through the customer's browser, ``bindRequest`` (base64 of a JSON object),
``SigAlg`` (rsa-sha256) and ``Signature`` (base64). The signed octets are not documented: we
accept the ``bindRequest`` value exactly as received and, failing that, the redirect-style
``bindRequest=<url-encoded>&SigAlg=<url-encoded>`` (as the SAML Redirect binding signs), and
record which one verified.

The notice carries no timestamp or nonce, so ``digest`` (SHA-256 of the signed ``bindRequest``
value) is what tells one notice from another: the store remembers the digest of every notice it
applied and treats the same one again as a replay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from cryptography import x509

from idp_bridge.errors import RequestError, SignatureError
from idp_bridge.saml.algorithms import RSA_SHA256, signature_algorithm, verify_detached

MAX_BIND_REQUEST = 16 * 1024  # base64 characters
MAX_SIGNATURE = 2048  # base64 characters (a 8192-bit RSA signature is 1368)
MAX_JSON_KEYS = 64
LIMITS = {"xUserId": 128, "domainId": 128, "domainName": 256}
BIND, UNBIND = "0", "1"
OCTETS_VALUE = "bindRequest"
OCTETS_REDIRECT = "redirect-style"


class BindingError(RequestError):
    code = "bind_invalid"
    status = 400


@dataclass(frozen=True)
class BindNotification:
    x_user_id: str
    domain_id: str | None
    domain_name: str | None
    bind_action: str  # "0" bind, "1" unbind
    payload: dict[str, Any]  # the whole JSON object, as Huawei sent it
    signed_octets: str  # OCTETS_VALUE or OCTETS_REDIRECT
    certificate: x509.Certificate
    digest: str  # SHA-256 (hex) of the bindRequest value: the same notice has the same digest

    @property
    def bound(self) -> bool:
        return self.bind_action == BIND


def verify_bind_notification(form: Mapping[str, str], certificates: Sequence[x509.Certificate]
                             ) -> BindNotification:
    """Verify the signature, then decode and check the JSON. Raises BindingError / SignatureError."""
    bind_request = form.get("bindRequest") or ""
    sig_alg = form.get("SigAlg") or ""
    signature_b64 = form.get("Signature") or ""
    if not bind_request or not signature_b64:
        missing = [n for n, v in (("bindRequest", bind_request), ("Signature", signature_b64)) if not v]
        raise BindingError(f"binding notification without {' and '.join(missing)}; expected a form POST of "
                           "bindRequest, SigAlg and Signature", code="bind_missing_field")
    if len(bind_request) > MAX_BIND_REQUEST or len(signature_b64) > MAX_SIGNATURE:
        raise BindingError(f"binding notification too large: bindRequest {len(bind_request)} characters (limit "
                           f"{MAX_BIND_REQUEST}), Signature {len(signature_b64)} (limit {MAX_SIGNATURE})",
                           code="bind_too_large")
    algorithm = signature_algorithm(sig_alg, accepted=[RSA_SHA256])
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("binding notification Signature is not valid base64", code="bind_signature") from None
    candidates = [
        (OCTETS_VALUE, bind_request.encode("utf-8")),
        (OCTETS_REDIRECT, f"bindRequest={quote(bind_request, safe='')}&SigAlg={quote(sig_alg, safe='')}".encode()),
        (OCTETS_REDIRECT, f"bindRequest={quote_plus(bind_request)}&SigAlg={quote_plus(sig_alg)}".encode()),
    ]
    last: SignatureError | None = None
    for name, octets in candidates:
        try:
            cert = verify_detached(signature, octets, algorithm, certificates)
        except SignatureError as exc:
            last = exc
            continue
        return _decode(bind_request, name, cert)
    assert last is not None
    raise SignatureError(f"binding notification signature does not verify over the bindRequest value nor over "
                         f"'bindRequest=…&SigAlg=…': {last.operator}", code="bind_signature")


def _decode(bind_request: str, signed_octets: str, cert: x509.Certificate) -> BindNotification:
    try:
        raw = base64.b64decode(bind_request + "=" * (-len(bind_request) % 4), validate=True)
        payload = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise BindingError(f"bindRequest is not base64 of UTF-8 JSON: {exc}", code="bind_malformed") from None
    if not isinstance(payload, dict) or len(payload) > MAX_JSON_KEYS:
        raise BindingError(f"bindRequest must be a JSON object of at most {MAX_JSON_KEYS} keys",
                           code="bind_malformed")
    values: dict[str, str | None] = {}
    for key, limit in LIMITS.items():
        value = payload.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise BindingError(f"bindRequest {key} must be a string of at most {limit} characters, got "
                               f"{str(value)[:80]!r}", code="bind_malformed")
        values[key] = value or None
    x_user_id = values["xUserId"]
    if not x_user_id:
        raise BindingError("bindRequest has no xUserId", code="bind_malformed")
    action = payload.get("bindAction")
    action_text = str(action) if isinstance(action, str | int) and not isinstance(action, bool) else None
    if action_text not in (BIND, UNBIND):
        raise BindingError(f"bindRequest bindAction is {action!r}; expected 0 (bind) or 1 (unbind), as a string "
                           "or a number", code="bind_malformed")
    if action_text == BIND and not values["domainId"]:
        raise BindingError("bindRequest binds (bindAction 0) but has no domainId", code="bind_malformed")
    return BindNotification(x_user_id, values["domainId"], values["domainName"], action_text, payload,
                            signed_octets, cert, hashlib.sha256(bind_request.encode("utf-8")).hexdigest())
