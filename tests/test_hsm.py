"""PKCS#11 signing for real: a SoftHSM2 token in a temporary folder, an RSA key and an ECDSA P-256 key imported
into it, a Response signed through the token and verified by the xmlsec1 command with only the certificate; the
token's private keys are sensitive and not extractable, and a certificate that is not the token key's is refused."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from idp_bridge.config import Pkcs11KeyConfig
from idp_bridge.errors import KeyRingError
from idp_bridge.keys.files import key_id_for
from idp_bridge.keys.pkcs11 import Pkcs11Signer, signer_from_config
from idp_bridge.keys.ring import load_ring
from idp_bridge.saml import algorithms
from idp_bridge.saml.responses import build_response
from idp_bridge.saml.xml import AUTHN_PASSWORD_PROTECTED, NAMEID_TRANSIENT
from tests.journey import xmlsec1_verify
from tests.pki import TestKey, make_key

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "123456"


@pytest.fixture(scope="module")
def hsm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("softhsm")


@pytest.fixture(scope="module")
def token(hsm_dir: Path) -> Iterator[TestKey]:
    """A SoftHSM2 token 'bridge' holding one RSA key pair labelled 'signing'. One per module: the PKCS#11
    library reads SOFTHSM2_CONF once per process, when it is initialised."""
    if not MODULE.exists() or not shutil.which("softhsm2-util"):
        pytest.fail("SoftHSM2 is missing: apt-get install -y softhsm2 (scripts/test.sh installs it)")
    tmp_path = hsm_dir
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bridge", "--pin", PIN, "--so-pin", "0000"],
                   check=True, capture_output=True, timeout=30)
    key = make_key("hsm-key", bits=2048)
    (tmp_path / "key.pem").write_bytes(key.key_pem)
    subprocess.run(["softhsm2-util", "--import", str(tmp_path / "key.pem"), "--token", "bridge", "--label", "signing",
                    "--id", "01", "--pin", PIN], check=True, capture_output=True, timeout=30)
    (tmp_path / "key.pem").unlink()
    (hsm_dir / "hsm.crt").write_bytes(key.cert_pem)
    ec_key = make_key("hsm-ec-key", curve=True)
    (tmp_path / "ec.pem").write_bytes(ec_key.key_pem)
    subprocess.run(["softhsm2-util", "--import", str(tmp_path / "ec.pem"), "--token", "bridge", "--label",
                    "ec-signing", "--id", "02", "--pin", PIN], check=True, capture_output=True, timeout=30)
    (tmp_path / "ec.pem").unlink()
    (hsm_dir / "hsm-ec.crt").write_bytes(ec_key.cert_pem)
    yield key
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


def _response(signer: Pkcs11Signer) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return build_response(
        issuer="https://sso.partner.example/saml/metadata", destination="https://auth.huaweicloud.com/acs",
        audience="https://auth.huaweicloud.com/", in_response_to="_req-1", name_id="_n1",
        name_id_format=NAMEID_TRANSIENT, attributes={"xUserId": ["cust-1"]}, now=now,
        lifetime=dt.timedelta(minutes=5), not_before_skew=dt.timedelta(minutes=3), session_index="_s1",
        authn_instant=now, authn_context=AUTHN_PASSWORD_PROTECTED, signer=signer, sign_assertion=True,
        sign_response=True, sp_name_qualifier="https://auth.huaweicloud.com/")


def test_response_signed_in_the_token_passes_xmlsec1(token: TestKey, hsm_dir: Path) -> None:
    item = Pkcs11KeyConfig(module=MODULE, token_label="bridge", key_label="signing",
                           certificate=hsm_dir / "hsm.crt", pin_env="TEST_PKCS11_PIN")
    signer = signer_from_config(item, {"TEST_PKCS11_PIN": PIN})
    xml = _response(signer)
    cert_b64 = "".join(token.cert_pem.decode().strip().splitlines()[1:-1])
    for node in ("Assertion", "Response"):
        result = xmlsec1_verify(xml, cert_b64, node=node)
        assert result.returncode == 0, result.stderr
    other = make_key("not-the-hsm-key")
    other_b64 = "".join(other.cert_pem.decode().strip().splitlines()[1:-1])
    assert xmlsec1_verify(xml, other_b64).returncode != 0  # the check can fail


def test_token_key_joins_the_key_ring(token: TestKey, hsm_dir: Path) -> None:
    item = Pkcs11KeyConfig(module=MODULE, token_label="bridge", key_label="signing", certificate=hsm_dir / "hsm.crt")
    signer = signer_from_config(item, {"IDP_BRIDGE_PKCS11_PIN": PIN})
    ring = load_ring(hsm_dir / "no-files", hsm=[signer])
    assert ring.active.signer is signer and ring.active.key_id == signer.key_id


def test_refusals(token: TestKey, hsm_dir: Path) -> None:
    good = Pkcs11KeyConfig(module=MODULE, token_label="bridge", key_label="signing", certificate=hsm_dir / "hsm.crt")
    with pytest.raises(KeyRingError) as exc:
        signer_from_config(good, {})
    assert exc.value.code == "hsm_pin"
    with pytest.raises(KeyRingError) as exc:
        signer_from_config(good, {"IDP_BRIDGE_PKCS11_PIN": "999999"})
    assert exc.value.code == "hsm_key"
    (hsm_dir / "other.crt").write_bytes(make_key("other").cert_pem)
    mismatched = Pkcs11KeyConfig(module=MODULE, token_label="bridge", key_label="signing",
                                 certificate=hsm_dir / "other.crt")
    with pytest.raises(KeyRingError) as exc:
        signer_from_config(mismatched, {"IDP_BRIDGE_PKCS11_PIN": PIN})
    assert exc.value.code == "key_cert_mismatch"


def test_private_keys_never_leave_the_token(token: TestKey, hsm_dir: Path) -> None:
    from pkcs11 import Attribute

    for label, cert in (("signing", "hsm.crt"), ("ec-signing", "hsm-ec.crt")):
        item = Pkcs11KeyConfig(module=MODULE, token_label="bridge", key_label=label, certificate=hsm_dir / cert)
        signer = signer_from_config(item, {"IDP_BRIDGE_PKCS11_PIN": PIN})
        private = signer._key
        assert private[Attribute.SENSITIVE] is True, label
        assert private[Attribute.EXTRACTABLE] is False, label


def test_ecdsa_token_key_signs_and_must_match_its_certificate(token: TestKey, hsm_dir: Path) -> None:
    good = Pkcs11KeyConfig(module=MODULE, token_label="bridge", key_label="ec-signing",
                           certificate=hsm_dir / "hsm-ec.crt")
    signer = signer_from_config(good, {"IDP_BRIDGE_PKCS11_PIN": PIN})
    assert signer.algorithm == algorithms.ECDSA_SHA256
    raw = signer.sign(b"signed data")  # XML-DSig form: r || s, 32 bytes each for P-256
    assert len(raw) == 64
    public = signer.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, b"signed data", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(der, b"other data", ec.ECDSA(hashes.SHA256()))
    xml = _response(signer)
    cert_b64 = "".join((hsm_dir / "hsm-ec.crt").read_text().strip().splitlines()[1:-1])
    result = xmlsec1_verify(xml, cert_b64, node="Response")
    assert result.returncode == 0, result.stderr

    (hsm_dir / "other-ec.crt").write_bytes(make_key("other-ec", curve=True).cert_pem)
    for cert in ("other-ec.crt", "hsm.crt"):  # another P-256 key; an RSA certificate for the EC token key
        wrong = Pkcs11KeyConfig(module=MODULE, token_label="bridge", key_label="ec-signing",
                                certificate=hsm_dir / cert)
        with pytest.raises(KeyRingError) as exc:
            signer_from_config(wrong, {"IDP_BRIDGE_PKCS11_PIN": PIN})
        assert exc.value.code == "key_cert_mismatch", cert
        assert "does not match" in exc.value.operator or "is EC" in exc.value.operator


def test_check_passes_a_deployment_whose_only_key_is_in_the_token(token: TestKey, hsm_dir: Path, tmp_path: Path,
                                                                  db_url: str) -> None:
    """Issue 9.1: `idp-bridge check` must assemble the key ring like the bridge does, PKCS#11 keys included, and
    not stop at an empty key folder."""
    from idp_bridge.config import load_config, read_raw_config, write_raw_config
    from idp_bridge.diagnostics.check import check_deployment
    from idp_bridge.diagnostics.http import HttpResult
    from idp_bridge.idp.identity_provider import IdentityProvider
    from idp_bridge.store import Store
    from tests.journey import make_env

    kid = key_id_for(token.certificate)
    env = make_env(tmp_path / "bridge", db_url)
    for path in env.config.key_dir.iterdir():
        path.unlink()  # no key files at all: the token holds the only key
    assert env.config.path is not None
    raw = read_raw_config(env.config.path)
    raw["keys"] = {"pkcs11": [{"module": str(MODULE), "token_label": "bridge", "key_label": "signing",
                               "certificate": str(hsm_dir / "hsm.crt"), "pin_env": "TEST_PKCS11_PIN"}]}
    write_raw_config(env.config.path, raw)
    os.environ["TEST_PKCS11_PIN"] = PIN
    try:
        config = load_config(env.config.path)
        store = Store.from_url(db_url)
        bridge = IdentityProvider(config, store)
        assert bridge.keys.ring().active.key_id == kid  # what the bridge itself signs with
        bridge.export_metadata()
        store.dispose()

        def unreachable(method: str, url: str) -> HttpResult:
            raise OSError("not started in this test")

        report = check_deployment(env.config.path, fetch=unreachable)
    finally:
        os.environ.pop("TEST_PKCS11_PIN", None)
    keys = [i for i in report.items if i.group == "keys"]
    assert keys and all(i.ok for i in keys), report.render()
    assert any(kid in i.detail and i.name == "key states" for i in keys), report.render()
    assert not [i for i in report.items if i.name == "metadata builds" and not i.ok], report.render()
    assert report.item("our metadata", "schema-valid").ok, report.render()
