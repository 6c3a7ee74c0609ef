"""The Huawei IAM simulator (idp_bridge.devtools.simulator), driven with Flask test clients."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask import Flask
from flask.testing import FlaskClient
from lxml import etree

from idp_bridge.devtools.simulator import SimulatorConfig, create_simulator_app, fetch_metadata
from idp_bridge.devtools.simulator.partner_flows import payment_return_link
from idp_bridge.errors import MetadataError
from idp_bridge.saml.bindings import decode_redirect, encode_post, verify_redirect_signature
from idp_bridge.saml.metadata import build_idp_metadata, parse_sp_metadata
from idp_bridge.saml.requests import parse_authn_request
from idp_bridge.saml.responses import build_response
from idp_bridge.saml.signing import PrivateKeySigner
from idp_bridge.saml.xml import AUTHN_PASSWORD_PROTECTED, BINDING_POST, NAMEID_TRANSIENT
from tests.huawei_fixtures import FIXTURES
from tests.pki import cached_key

BASE = "http://127.0.0.1:8001"
IDP_ENTITY = "https://partner.example.com/saml/idp"
SSO_URL = "https://partner.example.com/saml/sso"
X_ACCOUNT_TYPE = "partner_demo_IDP"
NOTIFY_URL = "https://partner.example.com/huawei/bind-notify"
RETURN_URL = "https://partner.example.com/orders?from=huawei"


def _signer(name: str) -> PrivateKeySigner:
    key = cached_key(name)
    return PrivateKeySigner(key.private_key, key.certificate)


def _idp_metadata(*names: str) -> bytes:
    return build_idp_metadata(entity_id=IDP_ENTITY, sso_url=SSO_URL,
                              certificates=[cached_key(n).certificate for n in names],
                              valid_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=7),
                              cache_duration=dt.timedelta(hours=1))


@pytest.fixture(scope="module")
def simulator_signer() -> PrivateKeySigner:
    return _signer("huawei-simulator")


@pytest.fixture
def metadata_holder() -> dict[str, bytes]:
    """Mutable so a test can rotate the IdP metadata 'uploaded to Partner Center'."""
    return {"xml": _idp_metadata("idp-signing")}


@pytest.fixture
def config(simulator_signer: PrivateKeySigner, metadata_holder: dict[str, bytes]) -> SimulatorConfig:
    return SimulatorConfig(base_url=BASE, signer=simulator_signer,
                           idp_metadata={X_ACCOUNT_TYPE: lambda: metadata_holder["xml"]},
                           bind_notify_url=NOTIFY_URL, payment_return_url=RETURN_URL)


@pytest.fixture
def app(config: SimulatorConfig) -> Flask:
    return create_simulator_app(config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def start_login(client: FlaskClient, *, first_login: bool = False,
                service: str = "https://console.huaweicloud.com/ecm/?region=cn-north-4") -> tuple[str, str]:
    """Follow the console login link; return (AuthnRequest ID, RelayState) after checking the redirect."""
    resp = client.get("/authui/saml/login", query_string={
        "xAccountType": X_ACCOUNT_TYPE, "isFirstLogin": "true" if first_login else "false", "service": service})
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith(SSO_URL + "?")
    msg = decode_redirect(urlsplit(location).query)
    req = parse_authn_request(msg.xml)
    assert msg.relay_state
    return req.id, msg.relay_state


def respond(client: FlaskClient, request_id: str | None, relay_state: str | None, **overrides: object):  # type: ignore[no-untyped-def]
    now = dt.datetime.now(dt.UTC)
    kwargs: dict[str, object] = dict(
        issuer=IDP_ENTITY, destination=f"{BASE}/authui/saml/SAMLAssertionConsumer", audience=f"{BASE}/",
        in_response_to=request_id, name_id="t-abc", name_id_format=NAMEID_TRANSIENT,
        attributes={"xUserId": ["cust-1001"], "email": ["alice@example.com"], "mobile": ["0086-13800000000"]},
        now=now, lifetime=dt.timedelta(minutes=5), not_before_skew=dt.timedelta(minutes=2), session_index="s-1",
        authn_instant=now, authn_context=AUTHN_PASSWORD_PROTECTED, signer=_signer("idp-signing"))
    kwargs.update(overrides)
    xml = build_response(**kwargs)  # type: ignore[arg-type]
    form = {"SAMLResponse": encode_post(xml)}
    if relay_state is not None:
        form["RelayState"] = relay_state
    return client.post("/authui/saml/SAMLAssertionConsumer", data=form), xml


def last_report(client: FlaskClient) -> dict[str, object]:
    resp = client.get("/simulator/last.json")
    assert resp.status_code == 200
    data: dict[str, object] = resp.get_json()
    return data


def failed(report: dict[str, object]) -> set[str]:
    checks = report["checks"]
    assert isinstance(checks, list)
    return {c["name"] for c in checks if not c["ok"]}


# --------------------------------------------------------------------------- metadata and login


def test_metadata_route(client: FlaskClient, simulator_signer: PrivateKeySigner) -> None:
    resp = client.get("/authui/saml/metadata.xml")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/samlmetadata+xml")
    md = parse_sp_metadata(resp.data)
    assert md.entity_id == f"{BASE}/"
    assert md.default_acs().location == f"{BASE}/authui/saml/SAMLAssertionConsumer"
    assert md.default_acs().binding == BINDING_POST
    assert md.authn_requests_signed and md.want_assertions_signed
    assert md.signing_certificates == (simulator_signer.certificate,)


@pytest.mark.parametrize("query", [{}, {"xAccountType": "someone_else"}])
def test_login_requires_known_x_account_type(client: FlaskClient, query: dict[str, str]) -> None:
    resp = client.get("/authui/saml/login", query_string=query)
    assert resp.status_code == 400
    assert "xAccountType" in resp.get_data(as_text=True)
    assert X_ACCOUNT_TYPE in resp.get_data(as_text=True)


def test_login_redirects_with_signed_huawei_shaped_request(client: FlaskClient,
                                                           simulator_signer: PrivateKeySigner) -> None:
    resp = client.get("/authui/saml/login", query_string={"xAccountType": X_ACCOUNT_TYPE, "isFirstLogin": "false"})
    location = resp.headers["Location"]
    raw_query = urlsplit(location).query
    assert list(parse_qs(raw_query)) == ["SAMLRequest", "RelayState", "SigAlg", "Signature"]
    msg = decode_redirect(raw_query)
    assert verify_redirect_signature(msg, [simulator_signer.certificate], required=True) == simulator_signer.certificate
    # A different certificate does not verify it.
    with pytest.raises(Exception, match="does not verify"):
        verify_redirect_signature(msg, [cached_key("stranger").certificate], required=True)
    assert msg.sig_alg == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

    req = parse_authn_request(msg.xml)
    assert req.issuer == f"{BASE}/"
    assert req.destination == SSO_URL
    assert req.acs_url == f"{BASE}/authui/saml/SAMLAssertionConsumer"
    assert req.protocol_binding == BINDING_POST
    assert req.name_id_format == NAMEID_TRANSIENT and req.allow_create is True
    assert req.sp_name_qualifier == f"{BASE}/"
    assert (req.force_authn, req.is_passive) == (False, False)
    assert re.fullmatch(r"_[a-z0-9]{36}", req.id)
    # Same element and attribute names as Huawei's own sample.
    sample = etree.parse(str(FIXTURES / "huawei-doc-sample-authnrequest.xml")).getroot()
    ours = etree.fromstring(msg.xml)
    assert ours.tag == sample.tag and sorted(ours.attrib) == sorted(sample.attrib)
    assert [c.tag for c in ours] == [c.tag for c in sample]
    assert sorted(ours[1].attrib) == sorted(sample[1].attrib)


def test_unusable_metadata_is_a_readable_error(client: FlaskClient, metadata_holder: dict[str, bytes]) -> None:
    metadata_holder["xml"] = (FIXTURES / "huawei-cn-sp-metadata.xml").read_bytes()  # SP, not IdP, metadata
    resp = client.get("/authui/saml/login", query_string={"xAccountType": X_ACCOUNT_TYPE})
    assert resp.status_code == 502
    assert "IDPSSODescriptor" in resp.get_data(as_text=True)


# --------------------------------------------------------------------------- ACS


def test_acs_accepts_good_response_then_refuses_replay(client: FlaskClient) -> None:
    service = "https://console.huaweicloud.com/ecm/?region=cn-north-4#/ecs/manager/vmList"
    request_id, relay_state = start_login(client, service=service)
    resp, xml = respond(client, request_id, relay_state)
    assert resp.status_code == 302 and resp.headers["Location"] == "/console"
    report = last_report(client)
    assert report["ok"] is True and failed(report) == set()
    assert report["attributes"] == {"xUserId": ["cust-1001"], "email": ["alice@example.com"],
                                    "mobile": ["0086-13800000000"]}
    assert report["service"] == service and report["x_account_type"] == X_ACCOUNT_TYPE

    console = client.get("/console")
    page = html.unescape(console.get_data(as_text=True))
    assert console.status_code == 200
    assert "Huawei Cloud console (simulator)" in page and "cust-1001" in page and service in page
    assert "attribute_email" in page and "✓" in page and "✗" not in page

    replay = client.post("/authui/saml/SAMLAssertionConsumer",
                         data={"SAMLResponse": encode_post(xml), "RelayState": relay_state})
    assert replay.status_code == 403
    report = last_report(client)
    assert report["ok"] is False
    assert failed(report) == {"relay_state", "response_in_response_to", "subject_confirmation_in_response_to"}
    assert "response_in_response_to" in replay.get_data(as_text=True)


def test_acs_refuses_bad_response_naming_the_check(client: FlaskClient) -> None:
    request_id, relay_state = start_login(client)
    resp, _ = respond(client, request_id, relay_state, audience="https://auth.huaweicloud.com/")
    assert resp.status_code == 403
    page = html.unescape(resp.get_data(as_text=True))
    assert "audience" in page and "https://auth.huaweicloud.com/" in page and f"{BASE}/" in page
    assert failed(last_report(client)) == {"audience"}
    assert client.get("/console").status_code == 401


def test_acs_refuses_signature_by_rotated_out_key(client: FlaskClient, metadata_holder: dict[str, bytes]) -> None:
    """Metadata is fetched fresh: a key no longer listed is refused at once."""
    metadata_holder["xml"] = _idp_metadata("idp-next")
    request_id, relay_state = start_login(client)
    resp, _ = respond(client, request_id, relay_state)  # signed with idp-signing
    assert resp.status_code == 403
    checks = {c["name"]: c for c in last_report(client)["checks"]}  # type: ignore[attr-defined]
    assert not checks["assertion_signature"]["ok"] and "does not verify" in checks["assertion_signature"]["actual"]
    # Nothing else is read from an Assertion whose signature did not verify.
    assert checks["attribute_xUserId"]["actual"] == "not checked: the Assertion signature did not verify"
    resp, _ = respond(client, *start_login(client), signer=_signer("idp-next"))
    assert resp.status_code == 302


def test_acs_missing_x_user_id(client: FlaskClient) -> None:
    resp, _ = respond(client, *start_login(client), attributes={"email": ["alice@example.com"]})
    assert resp.status_code == 403
    assert failed(last_report(client)) == {"attribute_xUserId"}


def test_acs_wrong_relay_state(client: FlaskClient) -> None:
    request_id, _ = start_login(client)
    resp, _ = respond(client, request_id, "tampered")
    assert resp.status_code == 403
    assert failed(last_report(client)) == {"relay_state"}


def test_last_json_before_any_response(client: FlaskClient) -> None:
    assert client.get("/simulator/last.json").status_code == 404


# --------------------------------------------------------------------------- first login, payment


def test_first_login_binds_and_notifies_partner(client: FlaskClient, simulator_signer: PrivateKeySigner) -> None:
    resp, _ = respond(client, *start_login(client, first_login=True))
    assert resp.status_code == 302 and resp.headers["Location"] == "/authui/bind"
    assert "bind" in client.get("/authui/bind").get_data(as_text=True).lower()
    page = client.post("/authui/bind", data={"action": "register", "domain_name": "alice_hw"})
    text = page.get_data(as_text=True)
    form = etree.fromstring(text, etree.HTMLParser()).find(".//form[@id='notify']")
    assert form is not None and form.get("action") == NOTIFY_URL and form.get("method") == "post"
    fields = {i.get("name"): i.get("value") for i in form.iter("input")}
    assert set(fields) == {"bindRequest", "SigAlg", "Signature"}
    payload = json.loads(base64.b64decode(fields["bindRequest"]))
    assert payload["xUserId"] == "cust-1001" and payload["domainName"] == "alice_hw"
    assert payload["bindAction"] == 0 and re.fullmatch(r"[0-9a-f]{32}", payload["domainId"])
    assert fields["SigAlg"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    public_key = simulator_signer.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(base64.b64decode(fields["Signature"]), fields["bindRequest"].encode(),
                      padding.PKCS1v15(), hashes.SHA256())
    assert "Huawei account bound" in html.unescape(client.get("/console").get_data(as_text=True))


def test_pay_for_an_order_links_back_to_partner(client: FlaskClient) -> None:
    respond(client, *start_login(client))
    assert "Pay for an order" in client.get("/console").get_data(as_text=True)
    page = client.post("/order/pay").get_data(as_text=True)
    link = etree.fromstring(page, etree.HTMLParser()).find(".//a[@id='order-details']")
    assert link is not None and link.text == "View order details"
    parts = urlsplit(link.get("href"))
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://partner.example.com/orders"
    query = parse_qs(parts.query)
    assert query["from"] == ["huawei"] and re.fullmatch(r"CS\d{18}", query["orderId"][0])


def test_payment_return_link_without_query() -> None:
    assert payment_return_link("https://p.example/r", "CS1") == "https://p.example/r?orderId=CS1"


def test_generate_makes_a_working_config() -> None:
    cfg = SimulatorConfig.generate("http://127.0.0.1:8001/", site="intl")
    assert cfg.entity_id == "http://127.0.0.1:8001/"
    assert cfg.huawei_site.iam_host == "auth-intl.huaweicloud.com"
    assert cfg.signer.algorithm.endswith("rsa-sha256")
    app = create_simulator_app(cfg)
    assert b"auth-intl.huaweicloud.com" in app.test_client().get("/console").data


# --------------------------------------------------------------------------- fetching metadata by URL


@pytest.fixture
def metadata_server() -> Iterator[str]:
    body = _idp_metadata("idp-signing")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            payload = body if self.path == "/md.xml" else b"x" * (2 * 1024 * 1024 + 10)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_metadata_by_url(metadata_server: str) -> None:
    assert b"IDPSSODescriptor" in fetch_metadata(f"{metadata_server}/md.xml")
    with pytest.raises(MetadataError) as err:
        fetch_metadata(f"{metadata_server}/huge.xml")
    assert err.value.code == "metadata_too_large"
    with pytest.raises(MetadataError):
        fetch_metadata("file:///etc/passwd")
