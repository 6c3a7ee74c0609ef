"""Huawei's binding notification: signature over the value as received (or redirect-style), JSON checks."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from idp_bridge.devtools.simulator.partner_flows import build_bind_notification
from idp_bridge.errors import SignatureError
from idp_bridge.huawei.binding import OCTETS_REDIRECT, OCTETS_VALUE, BindingError, verify_bind_notification
from idp_bridge.saml.algorithms import RSA_SHA1, RSA_SHA256
from idp_bridge.saml.signing import PrivateKeySigner
from tests.pki import cached_key

HUAWEI = cached_key("huawei-sp")
OTHER = cached_key("not-huawei")


def signed(payload: dict[str, object], *, redirect_style: bool = False, key: object = HUAWEI) -> dict[str, str]:
    bind_request = base64.b64encode(json.dumps(payload).encode()).decode()
    octets = (f"bindRequest={quote(bind_request, safe='')}&SigAlg={quote(RSA_SHA256, safe='')}" if redirect_style
              else bind_request).encode()
    priv = key.private_key  # type: ignore[attr-defined]
    assert isinstance(priv, rsa.RSAPrivateKey)
    sig = priv.sign(octets, padding.PKCS1v15(), hashes.SHA256())
    return {"bindRequest": bind_request, "SigAlg": RSA_SHA256, "Signature": base64.b64encode(sig).decode()}


def test_simulator_notification_verifies_over_the_value() -> None:
    fields = build_bind_notification(PrivateKeySigner(HUAWEI.private_key, HUAWEI.certificate), x_user_id="c-1",
                                     domain_name="hw_c1", domain_id="d" * 32)
    note = verify_bind_notification(fields, [OTHER.certificate, HUAWEI.certificate])
    assert (note.x_user_id, note.domain_id, note.domain_name, note.bind_action, note.bound) == (
        "c-1", "d" * 32, "hw_c1", "0", True)
    assert note.signed_octets == OCTETS_VALUE and note.certificate == HUAWEI.certificate


def test_redirect_style_octets_accepted_and_recorded() -> None:
    note = verify_bind_notification(signed({"xUserId": "c-2", "domainId": "d2", "domainName": "n",
                                            "bindAction": "1", "extra": {"k": 1}}, redirect_style=True),
                                    [HUAWEI.certificate])
    assert note.signed_octets == OCTETS_REDIRECT and note.bind_action == "1" and not note.bound
    assert note.payload["extra"] == {"k": 1}  # the whole JSON is kept


@pytest.mark.parametrize("action,expected", [(0, "0"), ("0", "0"), (1, "1"), ("1", "1")])
def test_bind_action_string_or_number(action: object, expected: str) -> None:
    note = verify_bind_notification(signed({"xUserId": "c", "domainId": "d", "bindAction": action}),
                                    [HUAWEI.certificate])
    assert note.bind_action == expected


def test_tampered_or_foreign_signature_refused() -> None:
    fields = signed({"xUserId": "c-3", "domainId": "d3", "bindAction": 0})
    other = dict(fields, bindRequest=base64.b64encode(b'{"xUserId":"victim","domainId":"d3","bindAction":0}').decode())
    with pytest.raises(SignatureError) as info:
        verify_bind_notification(other, [HUAWEI.certificate])
    assert info.value.code == "bind_signature" and "fingerprints tried" in info.value.operator
    with pytest.raises(SignatureError):
        verify_bind_notification(signed({"xUserId": "c", "domainId": "d", "bindAction": 0}, key=OTHER),
                                 [HUAWEI.certificate])


def test_missing_fields_sha1_and_sizes() -> None:
    fields = signed({"xUserId": "c", "domainId": "d", "bindAction": 0})
    for name in ("bindRequest", "Signature"):
        with pytest.raises(BindingError) as info:
            verify_bind_notification({k: v for k, v in fields.items() if k != name}, [HUAWEI.certificate])
        assert info.value.code == "bind_missing_field"
    with pytest.raises(SignatureError) as sinfo:
        verify_bind_notification(dict(fields, SigAlg=RSA_SHA1), [HUAWEI.certificate])
    assert sinfo.value.code == "sigalg_refused"
    with pytest.raises(BindingError) as info:
        verify_bind_notification(dict(fields, bindRequest="A" * 20000), [HUAWEI.certificate])
    assert info.value.code == "bind_too_large"
    with pytest.raises(SignatureError):
        verify_bind_notification(dict(fields, Signature="!!notbase64"), [HUAWEI.certificate])


@pytest.mark.parametrize("payload", [
    {"domainId": "d", "bindAction": 0},  # no xUserId
    {"xUserId": "c", "domainId": "d", "bindAction": 2},
    {"xUserId": "c", "domainId": "d", "bindAction": True},
    {"xUserId": "c", "bindAction": 0},  # bind without domainId
    {"xUserId": "c" * 200, "domainId": "d", "bindAction": 0},
    ["not", "an", "object"],
])
def test_signed_but_malformed_json(payload: object) -> None:
    with pytest.raises(BindingError) as info:
        verify_bind_notification(signed(payload), [HUAWEI.certificate])  # type: ignore[arg-type]
    assert info.value.code == "bind_malformed"
