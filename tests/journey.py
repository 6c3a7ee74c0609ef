"""Builders for journey tests: a configured bridge, a test key standing in for Huawei's, signed requests,
and the independent peers (python3-saml strict, the xmlsec1 command) that judge our Responses."""

from __future__ import annotations

import base64
import datetime as dt
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from lxml import etree

from idp_bridge.config import Config, load_config, write_raw_config
from idp_bridge.keys.files import generate_key
from idp_bridge.saml.bindings import encode_redirect
from idp_bridge.saml.metadata import build_sp_metadata
from idp_bridge.saml.request_builder import build_authn_request
from idp_bridge.saml.signing import PrivateKeySigner
from tests.huawei_fixtures import HUAWEI_ACS, HUAWEI_ENTITY_ID
from tests.pki import TestKey, cached_key

SP_ENTITY_ID = HUAWEI_ENTITY_ID  # our test key stands in for Huawei's, at Huawei's real addresses
SP_ACS = HUAWEI_ACS
BASE_URL = "http://127.0.0.1:5000"
PASSWORD = "correct horse battery"


@dataclass
class Env:
    root: Path
    config: Config
    huawei_key: TestKey

    @property
    def huawei_signer(self) -> PrivateKeySigner:
        return PrivateKeySigner(self.huawei_key.private_key, self.huawei_key.certificate)

    def authn_request(self, *, now: dt.datetime | None = None, request_id: str | None = None,
                      acs_url: str = SP_ACS, issuer: str = SP_ENTITY_ID, destination: str | None = None) -> bytes:
        return build_authn_request(issuer=issuer, destination=destination or self.config.sso_url, acs_url=acs_url,
                                   now=now or dt.datetime.now(dt.UTC), request_id=request_id,
                                   sp_name_qualifier=issuer)

    def redirect_query(self, xml: bytes, *, relay_state: str | None = "relay-1", signed: bool = True,
                       signer: Any = None) -> str:
        url = encode_redirect(xml, endpoint=self.config.sso_url, relay_state=relay_state,
                              signer=(signer or self.huawei_signer) if signed else None)
        return url.split("?", 1)[1]


def make_env(root: Path, db_url: str, *, base_url: str = BASE_URL, sign_response: bool = False,
             huawei_key: TestKey | None = None, key_days: int = 365) -> Env:
    huawei_key = huawei_key or cached_key("huawei-sp")
    root.mkdir(parents=True, exist_ok=True)
    sp_meta = root / "huawei-sp-metadata.xml"
    sp_meta.write_bytes(build_sp_metadata(entity_id=SP_ENTITY_ID, acs_url=SP_ACS,
                                          certificate=huawei_key.certificate))
    raw: dict[str, Any] = {
        "bridge": {"base_url": base_url, "entity_id": base_url + "/saml/metadata", "database_url": db_url,
                   "secret_key": "s" * 48},
        "huawei": {"partner_id": "bp-0001"},
        "sp": [{"name": "huawei-cn", "site": "cn", "metadata": str(sp_meta), "x_account_type": "partner-x",
                "console_hosts": ["console.huaweicloud.com"], "sign_response": sign_response}],
    }
    write_raw_config(root / "idp-bridge.toml", raw)
    config = load_config(root / "idp-bridge.toml", environ={})
    if not any(config.key_dir.glob("*.key")):
        generate_key(config.key_dir, common_name=config.entity_id, algorithm="rsa-2048", days=key_days)
    return Env(root, config, huawei_key)


# -- independent peers ----------------------------------------------------------------------------
def metadata_certificate_b64(metadata_xml: bytes) -> list[str]:
    root = etree.fromstring(metadata_xml)
    return [re.sub(r"\s+", "", el.text or "") for el in
            root.iter("{http://www.w3.org/2000/09/xmldsig#}X509Certificate")]


def python3_saml_validate(saml_response_b64: str, *, idp_metadata_xml: bytes, request_id: str,
                          acs_url: str = SP_ACS, sp_entity_id: str = SP_ENTITY_ID) -> tuple[bool, str | None,
                                                                                        dict[str, list[str]]]:
    """OneLogin python3-saml in strict mode, trusting only the certificate(s) from our metadata."""
    from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
    from onelogin.saml2.response import OneLogin_Saml2_Response
    from onelogin.saml2.settings import OneLogin_Saml2_Settings

    idp = OneLogin_Saml2_IdPMetadataParser.parse(idp_metadata_xml.decode())["idp"]
    settings = OneLogin_Saml2_Settings({
        "strict": True,
        "sp": {"entityId": sp_entity_id,
               "assertionConsumerService": {"url": acs_url,
                                            "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"},
               "NameIDFormat": "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"},
        "idp": idp,
        "security": {"wantAssertionsSigned": True, "rejectDeprecatedAlgorithm": True,
                     "wantMessagesSigned": False, "wantNameId": True},
    }, sp_validation_only=True)
    parts = acs_url.split("/", 3)
    request_data = {"https": "on" if acs_url.startswith("https") else "off", "http_host": parts[2],
                    "script_name": "/" + parts[3]}
    response = OneLogin_Saml2_Response(settings, saml_response_b64)
    ok = response.is_valid(request_data, request_id=request_id, raise_exceptions=False)
    attrs = response.get_attributes() if ok else {}
    return ok, response.get_error(), attrs


def xmlsec1_verify(xml: bytes, cert_b64: str, *, node: str = "Assertion") -> subprocess.CompletedProcess[str]:
    """The xmlsec1 command, given only our certificate; returns the process (returncode 0 = verified)."""
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(cert_b64[i:i + 64] for i in range(0, len(cert_b64), 64)) \
        + "\n-----END CERTIFICATE-----\n"
    id_attr = {"Assertion": "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
               "Response": "urn:oasis:names:tc:SAML:2.0:protocol:Response"}[node]
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, doc_path = Path(tmp, "cert.pem"), Path(tmp, "doc.xml")
        cert_path.write_text(pem)
        doc_path.write_bytes(xml)
        cmd = ["xmlsec1", "--verify", "--pubkey-cert-pem", str(cert_path), "--id-attr:ID", id_attr,
               "--enabled-reference-uris", "same-doc"]
        if node == "Assertion":
            cmd += ["--node-xpath", "//*[local-name()='Assertion']/*[local-name()='Signature']"]
        else:
            cmd += ["--node-xpath", "/*[local-name()='Response']/*[local-name()='Signature']"]
        return subprocess.run([*cmd, str(doc_path)], capture_output=True, text=True, timeout=30, check=False)


def extract_form(html: str) -> dict[str, str]:
    """The auto-POST form's action and fields, read the way a browser would (an HTML parser)."""
    from html.parser import HTMLParser

    found: dict[str, str] = {}

    class P(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = dict(attrs)
            if tag == "form" and a.get("id") == "saml-post":
                found["action"] = a.get("action") or ""
            if tag == "input" and a.get("name"):
                found[a["name"] or ""] = a.get("value") or ""

    P().feed(html)
    return found


def decode_response(b64: str) -> bytes:
    return base64.b64decode(b64)


def private_key_pem(key: TestKey) -> bytes:
    return key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
