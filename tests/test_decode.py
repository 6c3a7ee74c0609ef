"""`idp-bridge decode`: Huawei's own sample request, signed redirect URLs, captured Responses and bindRequests."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlencode

import pytest
from click.testing import CliRunner

from idp_bridge.cli import main
from idp_bridge.devtools.simulator.partner_flows import build_bind_notification
from idp_bridge.diagnostics.decode import decode_message
from idp_bridge.huawei.attributes import Customer
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.saml.response_checks import check_response, parse_idp_metadata
from idp_bridge.store import Store
from tests.huawei_fixtures import FIXTURES
from tests.journey import SP_ACS, SP_ENTITY_ID, Env, make_env
from tests.pki import make_key

SAMPLE = FIXTURES / "huawei-doc-sample-samlrequest.txt"
SAMPLE_ID = "_th2kld6nqqaq6lbvbw1cqqkbld2m7shj5i7x"


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return make_env(tmp_path / "bridge", db_url)


@pytest.fixture
def bridge(env: Env) -> Iterator[IdentityProvider]:
    store = Store.from_url(env.config.database_url)
    yield IdentityProvider(env.config, store)
    store.dispose()


def cli(env: Env | None, *args: str) -> tuple[int, str]:
    config = ["--config", str(env.config.path)] if env else ["--config", "/nonexistent/idp-bridge.toml"]
    result = CliRunner().invoke(main, [*config, "decode", *args])
    return result.exit_code, result.output


def test_huawei_doc_sample_prints_the_authn_request_without_config() -> None:
    code, out = cli(None, str(SAMPLE))
    assert "AuthnRequest (from bare value)" in out
    assert f'ID="{SAMPLE_ID}"' in out
    assert "<saml2:Issuer" in out and "https://auth.huaweicloud.com/</saml2:Issuer>" in out
    assert 'SPNameQualifier="https://auth.huaweicloud.com/"' in out
    assert "✓ schema-valid" in out
    assert "– signature: no configuration" in out
    assert code == 1  # a 2018 IssueInstant is stale now
    assert "✗ issue_instant" in out


def test_huawei_doc_sample_against_a_configured_huawei_sp(env: Env) -> None:
    code, out = cli(env, str(SAMPLE), "--at", "2018-11-26T09:12:30Z")
    assert "✓ issuer" in out
    assert "✓ issue_instant" in out
    assert "✓ name_id_policy" in out and "✓ acs" in out
    # the sample is a bare value: the query signature is not there, and our SSO URL is not its Destination;
    # the verdict is the live path's: its first failed rule
    assert "✗ signature: no SigAlg/Signature in the input" in out
    # the hint is about the capture, not about a rotated key
    assert "decode the whole URL the browser requested" in out and "refresh the SP metadata (key" not in out
    assert "✗ destination" in out and env.config.sso_url in out
    assert "✗ verdict: refused [signature_missing]" in out
    assert code == 1


def test_signed_redirect_url_verifies_and_is_accepted(env: Env, bridge: IdentityProvider) -> None:
    query = env.redirect_query(env.authn_request(request_id="_decode-1"), relay_state="rs-1")
    result = decode_message(env.config.sso_url + "?" + query, bridge=bridge)
    assert result.kind == "AuthnRequest" and result.source == "URL query"
    assert result.report.ok, result.report.render()
    assert result.report.item("AuthnRequest", "signature").detail.startswith("query signature")
    assert result.report.item("AuthnRequest", "verdict").detail.endswith(SP_ACS)
    assert result.fields["RelayState"] == "rs-1"


def test_redirect_url_signed_by_another_key_fails_signature(env: Env, bridge: IdentityProvider) -> None:
    from idp_bridge.saml.signing import PrivateKeySigner

    other = make_key("not-huawei")
    query = env.redirect_query(env.authn_request(), signer=PrivateKeySigner(other.private_key, other.certificate))
    result = decode_message(env.config.sso_url + "?" + query, bridge=bridge)
    item = result.report.item("AuthnRequest", "signature")
    assert item.status == "fail" and "refresh the SP metadata" in item.fix
    verdict = result.report.item("AuthnRequest", "verdict")  # the live path's verdict: refused for it
    assert verdict.status == "fail" and "[signature_invalid]" in verdict.detail
    assert result.refusal == "signature_invalid"
    assert [i.name for i in result.report.failed] == ["signature", "verdict"]  # only the signature is wrong


def _captured_response(env: Env, bridge: IdentityProvider, request_id: str) -> str:
    query = env.redirect_query(env.authn_request(request_id=request_id), relay_state="rs-9")
    pending = bridge.accept_redirect_request(query)
    now = dt.datetime.now(dt.UTC)
    form = bridge.issue_response(pending, Customer(user_id="cust-7", email="c7@partner.example", name="C Seven",
                                                   mobile="0086-13800000007"), authn_instant=now,
                                 session_index="_s1", now=now)
    return form.saml_response


def test_captured_response_html_page_shows_every_check(env: Env, bridge: IdentityProvider) -> None:
    b64 = _captured_response(env, bridge, "_decode-resp-1")
    page = (f'<!doctype html><html><body><form id="saml-post" method="post" action="{SP_ACS}">'
            f'<input type="hidden" name="SAMLResponse" value="{html.escape(b64)}">'
            '<input type="hidden" name="RelayState" value="rs-9"></form></body></html>')
    result = decode_message(page, bridge=bridge, request_id="_decode-resp-1")
    assert result.kind == "Response" and result.source == "HTML form"
    assert result.report.ok, result.render()
    # every SP-side check the simulator/Huawei runs is listed, with the same names
    reference = check_response(base64.b64decode(b64), idp=parse_idp_metadata(bridge.metadata().xml),
                               sp_entity_id=SP_ENTITY_ID, acs_url=SP_ACS, expected_request_ids={"_decode-resp-1"},
                               now=dt.datetime.now(dt.UTC))
    listed = {i.name for i in result.report.items if i.group == "SP checks"}
    assert listed == {c.name for c in reference.checks}
    for name in ("audience", "response_destination", "assertion_signature", "response_in_response_to"):
        assert any(n.startswith(name.split("_")[0]) for n in listed), name
    assert result.attributes["xUserId"] == ["cust-7"]
    assert result.fields["RelayState"] == "rs-9"
    text = result.render()
    assert "xUserId = cust-7" in text and "<saml:Assertion" in text


def test_form_body_response_with_wrong_request_id_and_tampering(env: Env, bridge: IdentityProvider) -> None:
    b64 = _captured_response(env, bridge, "_decode-resp-2")
    body = urlencode({"SAMLResponse": b64, "RelayState": "rs-9"})
    wrong = decode_message(body, bridge=bridge, request_id="_some-other-request")
    failed = {i.name: i for i in wrong.report.failed}
    assert set(failed) and all("in_response_to" in n for n in failed), wrong.report.render()
    assert "_some-other-request" in next(iter(failed.values())).expected

    xml = base64.b64decode(b64).replace(b"cust-7", b"cust-8")
    tampered = decode_message(base64.b64encode(xml).decode(), bridge=bridge, request_id="_decode-resp-2")
    assert tampered.report.item("SP checks", "assertion_signature").status == "fail"
    assert "metadata export" in tampered.report.item("SP checks", "assertion_signature").fix


def test_response_cli_json(env: Env, bridge: IdentityProvider) -> None:
    b64 = _captured_response(env, bridge, "_decode-resp-3")
    code, out = cli(env, "SAMLResponse=" + quote(b64, safe="") + "&RelayState=rs-9", "--json",
                    "--request-id", "_decode-resp-3")
    data = json.loads(out)
    assert code == 0, out
    assert data["kind"] == "Response" and data["checks"]["ok"] is True
    assert data["attributes"]["email"] == ["c7@partner.example"]


def test_bind_request_form_verifies_against_sp_metadata(env: Env, bridge: IdentityProvider) -> None:
    fields = build_bind_notification(env.huawei_signer, x_user_id="cust-7", domain_name="hw_cust7",
                                     domain_id="0123456789abcdef0123456789abcdef")
    result = decode_message(urlencode(fields), bridge=bridge)
    assert result.kind == "bindRequest"
    assert result.report.ok, result.report.render()
    assert json.loads(result.pretty)["xUserId"] == "cust-7"
    assert "bindRequest octets" in result.report.item("bindRequest", "signature").detail

    from idp_bridge.saml.signing import PrivateKeySigner

    other = make_key("forger")
    forged = build_bind_notification(PrivateKeySigner(other.private_key, other.certificate), x_user_id="cust-7",
                                     domain_name="x", domain_id="0123456789abcdef0123456789abcdef")
    bad = decode_message(urlencode(forged), bridge=bridge)
    assert not bad.report.ok
    assert "forged" in bad.report.failed[0].fix


def test_bare_bind_request_value_decodes_without_signature(bridge: IdentityProvider) -> None:
    value = base64.b64encode(b'{"xUserId":"u1","domainId":"d1","bindAction":0}').decode()
    result = decode_message(value, bridge=bridge)
    assert result.kind == "bindRequest" and json.loads(result.pretty)["domainId"] == "d1"
    assert result.report.item("bindRequest", "signature").status == "skip"


def test_garbage_is_a_clear_error() -> None:
    code, out = cli(None, "definitely not saml")
    assert code == 2 and "neither XML, JSON nor raw DEFLATE" in out
    code, out = cli(None, "!!not-base64!!")
    assert code == 2 and "not base64" in out


@pytest.mark.parametrize("path", ["/nonexistent/file", "captures/missing-response.txt", "saml-response.xml",
                                  "page.html"])
def test_a_missing_file_is_named_as_such_not_as_bad_base64(path: str) -> None:
    code, out = cli(None, path)
    assert code == 2
    assert f"file {path} does not exist" in out
    assert "not base64" not in out


def test_a_base64_value_with_slashes_is_still_decoded_not_taken_for_a_path() -> None:
    value = unquote(SAMPLE.read_text(encoding="utf-8").strip())
    assert "/" in value  # the URL-decoded sample holds '/' (%2F)
    code, out = cli(None, value)
    assert "Invalid value for VALUE" not in out
    assert "AuthnRequest (from bare value)" in out and SAMPLE_ID in out
