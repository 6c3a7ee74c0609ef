"""One rule, written once: for every hostile AuthnRequest, `decode` and the live path give the same verdict.

Table-driven over the same signed redirect queries: the live path (IdentityProvider.accept_redirect_request,
what /saml/sso runs) refuses with a code; `decode` (with the same configuration) reports the same code as its
verdict and marks the same rule failed. Each strictness rule of issue 8.6 has a row that fails if its fix is
removed (the honest rows keep the rules from refusing everything).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from idp_bridge.diagnostics.decode import decode_message
from idp_bridge.errors import ANY_ERROR
from idp_bridge.idp.identity_provider import AnsweredRefusal, IdentityProvider
from idp_bridge.store import Store
from tests.journey import SP_ENTITY_ID, Env, make_env
from tests.pki import make_key

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
ISSUER = f">{SP_ENTITY_ID}</saml2:Issuer>".encode()


def _issuer(text: str) -> Callable[[bytes], bytes]:
    return lambda xml: xml.replace(ISSUER, f">{text}</saml2:Issuer>".encode(), 1)


def _sub(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def change(xml: bytes) -> bytes:
        assert old in xml
        return xml.replace(old, new, 1)
    return change


def _no_destination(xml: bytes) -> bytes:
    start = xml.index(b' Destination="')
    return xml[:start] + xml[xml.index(b'"', start + 14) + 1:]


# name: (change to the honest request XML, query options, the rule that fails, the code; None = accepted)
Case = tuple[Callable[[bytes], bytes], dict[str, object], str | None, str | None]
CASES: dict[str, Case] = {
    "honest": (lambda x: x, {}, None, None),
    "honest_unspecified_nameid": (_sub(b'Format="urn:oasis:names:tc:SAML:2.0:nameid-format:transient"',
                                       f'Format="{UNSPECIFIED}"'.encode()), {}, None, None),
    "honest_no_nameid_policy": (lambda x: x[:x.index(b"<saml2p:NameIDPolicy")] + b"</saml2p:AuthnRequest>",
                                {}, None, None),
    # -- 8.6 strictness rules ---------------------------------------------------------------------------
    "issuer_with_comment": (_issuer(f"{SP_ENTITY_ID}<!-- -->.evil.example"), {}, "structure", "issuer_malformed"),
    "issuer_with_pi": (_issuer(f"{SP_ENTITY_ID}<?x y?>"), {}, "structure", "issuer_malformed"),
    "issuer_with_child": (_issuer(f'{SP_ENTITY_ID}<x:y xmlns:x="urn:x"/>'), {}, "structure", "issuer_malformed"),
    "issuer_padded": (_issuer(f" {SP_ENTITY_ID}\n"), {}, "issuer", "unknown_issuer"),
    "id_unbounded": (_sub(b'ID="_rule-', b'ID="_' + b"a" * 300), {}, "structure", "request_id_invalid"),
    "signed_without_destination": (_no_destination, {}, "destination", "destination_missing"),
    "nameid_persistent": (_sub(b"nameid-format:transient", b"nameid-format:persistent"), {},
                          "name_id_policy", "invalid_name_id_policy"),
    "nameid_email": (_sub(b'Format="urn:oasis:names:tc:SAML:2.0:nameid-format:transient"',
                          f'Format="{EMAIL}"'.encode()), {}, "name_id_policy", "invalid_name_id_policy"),
    "nameid_other_qualifier": (_sub(f'SPNameQualifier="{SP_ENTITY_ID}"'.encode(),
                                    b'SPNameQualifier="https://affiliation.example/"'), {},
                               "name_id_policy", "invalid_name_id_policy"),
    # -- the rules that were already there -------------------------------------------------------------
    "unsigned": (lambda x: x, {"signed": False}, "signature", "signature_missing"),
    "unsigned_without_destination": (_no_destination, {"signed": False}, "signature", "signature_missing"),
    "other_key": (lambda x: x, {"other_key": True}, "signature", "signature_invalid"),
    "unknown_issuer": (_issuer("https://evil.example/"), {}, "issuer", "unknown_issuer"),
    "wrong_destination": (_sub(b'Destination="', b'Destination="https://other-idp.example/sso?x='), {},
                          "destination", "destination_mismatch"),
    "artifact_binding": (_sub(b"bindings:HTTP-POST", b"bindings:HTTP-Artifact"), {}, "protocol_binding",
                         "binding_unsupported"),
    "acs_not_in_metadata": (_sub(b'AssertionConsumerServiceURL="', b'AssertionConsumerServiceURL="https://evil/'),
                            {}, "acs", "acs_not_in_metadata"),
    "stale": (lambda x: x, {"age": dt.timedelta(minutes=10)}, "issue_instant", "request_stale"),
    "future": (lambda x: x, {"age": -dt.timedelta(minutes=10)}, "issue_instant", "request_from_future"),
}


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return make_env(tmp_path / "bridge", db_url)


@pytest.fixture
def bridge(env: Env) -> Iterator[IdentityProvider]:
    store = Store.from_url(env.config.database_url)
    yield IdentityProvider(env.config, store)
    store.dispose()


def _query(env: Env, case: Case) -> str:
    change, options, _, _ = case
    age = options.get("age", dt.timedelta(0))
    assert isinstance(age, dt.timedelta)
    now = dt.datetime.now(dt.UTC) - age
    xml = change(env.authn_request(now=now, request_id="_rule-" + secrets.token_hex(8)))
    signer = None
    if options.get("other_key"):
        from idp_bridge.saml.signing import PrivateKeySigner

        other = make_key("not-huawei")
        signer = PrivateKeySigner(other.private_key, other.certificate)
    return env.redirect_query(xml, signed=bool(options.get("signed", True)), signer=signer)


def _live(bridge: IdentityProvider, query: str) -> str | None:
    try:
        bridge.accept_redirect_request(query)
    except AnsweredRefusal as exc:
        assert exc.form.action and exc.form.saml_response  # answered at the ACS, not with a page
        return exc.code
    except ANY_ERROR as exc:
        return exc.code
    return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_and_the_live_path_give_the_same_verdict(name: str, env: Env, bridge: IdentityProvider) -> None:
    case = CASES[name]
    _, _, rule, code = case
    query = _query(env, case)
    decoded = decode_message(env.config.sso_url + "?" + query, bridge=bridge)  # first: decode never claims the ID
    live = _live(bridge, query)
    assert live == code, f"live path: {live!r}, expected {code!r}"
    assert decoded.refusal == code, decoded.render()
    failed = [i.name for i in decoded.report.failed if i.name not in ("verdict", "schema-valid")]
    if rule is None:
        assert decoded.report.item("AuthnRequest", "verdict").status == "pass", decoded.render()
        assert failed == []
    else:
        assert failed and failed[0] == rule, decoded.render()
        assert f"[{code}]" in decoded.report.item("AuthnRequest", "verdict").detail


def test_every_rule_has_a_row() -> None:
    """A rule added to saml/requests.py without a row here fails this test."""
    from idp_bridge.saml.requests import REQUEST_CHECKS

    assert set(REQUEST_CHECKS) <= {rule for _, _, rule, _ in CASES.values()}
