"""Signing benchmark: raw RSA vs our whole signed-Response path vs signxml vs pysaml2 (xmlsec1).

Run:  .venv/bin/python bench/bench_signing.py [--seconds N] [--cpu K] [--no-pysaml2] [--no-signxml]

Everything runs in this one process, pinned to one CPU. Each figure is the best of several
short rounds, measured interleaved (raw RSA, ours, raw RSA, ours, ...), so a neighbour that
steals the CPU for a moment does not skew one side only. Keys are generated at start-up; the
pysaml2 IdP needs key/cert files and SP metadata on disk, which live in a temp dir for the
duration of the benchmark only (our own signing path never touches the disk).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from idp_bridge.saml.responses import AssertionSpec, render_response  # noqa: E402
from idp_bridge.saml.signing import PrivateKeySigner  # noqa: E402
from idp_bridge.saml.xml import AUTHN_PASSWORD_PROTECTED, NAMEID_TRANSIENT  # noqa: E402

IDP = "https://partner.example.com/saml/idp"
SP = "https://auth.huaweicloud.com/"
ACS = "https://auth.huaweicloud.com/authui/saml/SAMLAssertionConsumer"
ATTRIBUTES = {
    "xUserId": ["cust-0001"], "xAccountId": ["cust-0001"], "bpId": ["partner-42"],
    "email": ["zhang.san@example.com"], "name": ["Zhang San"], "mobile": ["0086-13800000000"],
}


def make_key(bits: int) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(65537, bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{bits}")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert


def spec() -> AssertionSpec:
    now = dt.datetime.now(dt.UTC)
    return AssertionSpec(issuer=IDP, destination=ACS, audience=SP, in_response_to="_req0123456789abcdef",
                         name_id="_" + "ab" * 16, now=now, session_index="_sess1", authn_instant=now,
                         attributes=ATTRIBUTES, name_id_format=NAMEID_TRANSIENT,
                         authn_context=AUTHN_PASSWORD_PROTECTED, sp_name_qualifier=SP)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    fn()  # warm up
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn()
        n += 10
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def best_interleaved(fns: dict[str, Callable[[], object]], seconds: float, rounds: int) -> dict[str, float]:
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = max(best[name], rate(fn, seconds / rounds))
    return best


# --------------------------------------------------------------------------- the contenders


def raw_rsa(key: rsa.RSAPrivateKey) -> Callable[[], object]:
    data = b"<ds:SignedInfo>" + b"x" * 900  # about the size of a SignedInfo
    pad, h = padding.PKCS1v15(), hashes.SHA256
    return lambda: key.sign(data, pad, h())


def ours(key: rsa.RSAPrivateKey, cert: x509.Certificate, *, sign_response: bool = False) -> Callable[[], object]:
    signer = PrivateKeySigner(key, cert)

    def run() -> bytes:
        # A fresh spec per call: new IDs and timestamps, as in production.
        return render_response(spec(), signer, sign_assertion=True, sign_response=sign_response)

    return run


def signxml_signer(key: rsa.RSAPrivateKey, cert: x509.Certificate) -> Callable[[], object] | None:
    try:
        import signxml
    except ImportError:
        return None
    signer = signxml.XMLSigner(method=signxml.methods.enveloped, signature_algorithm="rsa-sha256",
                               digest_algorithm="sha256", c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    unsigned = PrivateKeySigner(key, cert)

    def run() -> bytes:
        # Same unsigned document as ours, then signxml signs the Assertion and we serialize.
        root = etree.fromstring(render_response(spec(), unsigned, sign_assertion=False))
        assertion = root[2]
        signed = signer.sign(assertion, key=key, cert=cert_pem, reference_uri=assertion.get("ID"))
        root.replace(assertion, signed)
        out: bytes = etree.tostring(root)
        return out

    return run


SP_METADATA = """<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{sp}">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true"
      protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:transient</md:NameIDFormat>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{acs}" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"""


def pysaml2_idp(key: rsa.RSAPrivateKey, cert: x509.Certificate, workdir: Path) -> Callable[[], object] | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from saml2 import BINDING_HTTP_REDIRECT
            from saml2.config import IdPConfig
            from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_TRANSIENT, NameID
            from saml2.server import Server
            from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256
    except ImportError:
        return None
    xmlsec = shutil.which("xmlsec1")
    if xmlsec is None:
        return None
    (workdir / "idp.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    (workdir / "idp.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "sp.xml").write_text(SP_METADATA.format(sp=SP, acs=ACS))
    conf = IdPConfig()
    conf.load({
        "entityid": IDP,
        "service": {"idp": {
            "endpoints": {"single_sign_on_service": [("https://partner.example.com/saml/sso", BINDING_HTTP_REDIRECT)]},
            "policy": {"default": {"lifetime": {"minutes": 5}, "name_form": NAME_FORMAT_URI}},
            "name_id_format": [NAMEID_FORMAT_TRANSIENT],
            "sign_assertion": True,
        }},
        "key_file": str(workdir / "idp.key"),
        "cert_file": str(workdir / "idp.crt"),
        "metadata": {"local": [str(workdir / "sp.xml")]},
        "xmlsec_binary": xmlsec,
        "crypto_backend": "xmlsec1",
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
    })
    server = Server(config=conf)
    identity: dict[str, Any] = {k: list(v) for k, v in ATTRIBUTES.items()}

    def run() -> object:
        name_id = NameID(format=NAMEID_FORMAT_TRANSIENT, text="_" + "ab" * 16)
        return server.create_authn_response(
            identity, in_response_to="_req0123456789abcdef", destination=ACS, sp_entity_id=SP,
            name_id=name_id, authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": IDP},
            sign_assertion=True, sign_response=False, sign_alg=SIG_RSA_SHA256, digest_alg=DIGEST_SHA256)

    out = str(run())
    if "<ds:SignatureValue>" not in out and "SignatureValue>" not in out:
        raise SystemExit("pysaml2 produced an unsigned response; check its configuration")
    return run


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="time per contender (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best one counts (default 3)")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the first allowed)")
    parser.add_argument("--no-3072", action="store_true", help="skip the RSA-3072 pair")
    parser.add_argument("--no-signxml", action="store_true")
    parser.add_argument("--no-pysaml2", action="store_true")
    args = parser.parse_args()

    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    print(f"one process pinned to CPU {cpu}; {args.seconds:g}s per contender in {args.rounds} interleaved "
          "rounds (best round counts)\n")

    key2048, cert2048 = make_key(2048)
    rows: list[tuple[str, float, float | None]] = []

    r = best_interleaved({"raw": raw_rsa(key2048), "ours": ours(key2048, cert2048),
                          "ours+resp": ours(key2048, cert2048, sign_response=True)}, args.seconds, args.rounds)
    rows.append(("raw RSA-2048 PKCS#1 v1.5 SHA-256 sign (cryptography)", r["raw"], None))
    rows.append(("ours: build Response + sign Assertion, RSA-2048", r["ours"], r["ours"] / r["raw"]))
    rows.append(("ours: build + sign Assertion and Response (2 RSA ops)", r["ours+resp"],
                 2 * r["ours+resp"] / r["raw"]))

    if not args.no_3072:
        key3072, cert3072 = make_key(3072)
        r3 = best_interleaved({"raw": raw_rsa(key3072), "ours": ours(key3072, cert3072)},
                              args.seconds, args.rounds)
        rows.append(("raw RSA-3072 PKCS#1 v1.5 SHA-256 sign (cryptography)", r3["raw"], None))
        rows.append(("ours: build Response + sign Assertion, RSA-3072", r3["ours"], r3["ours"] / r3["raw"]))

    if not args.no_signxml:
        fn = signxml_signer(key2048, cert2048)
        if fn is None:
            rows.append(("signxml: not installed (pip install signxml)", 0.0, None))
        else:
            s = rate(fn, args.seconds)
            rows.append(("signxml 5: same Response, signs the Assertion, RSA-2048", s, s / r["raw"]))

    if not args.no_pysaml2:
        with tempfile.TemporaryDirectory(prefix="bench-pysaml2-") as tmp:
            fn = pysaml2_idp(key2048, cert2048, Path(tmp))
            if fn is None:
                rows.append(("pysaml2: not installed or no xmlsec1 binary", 0.0, None))
            else:
                p = rate(fn, args.seconds)
                rows.append(("pysaml2 create_authn_response, xmlsec1 backend, RSA-2048", p, p / r["raw"]))

    width = max(len(name) for name, _, _ in rows)
    print(f"{'':{width}}  {'per second':>11}  {'% of raw RSA':>12}")
    for name, value, share in rows:
        pct = f"{share * 100:11.1f}%" if share is not None else ""
        print(f"{name:{width}}  {value:11.1f}  {pct:>12}")
    print("\n(for the two-signature row, % compares 2 x responses/s with raw signatures/s)")
    print(f"per-response overhead of ours over raw RSA-2048: {(1 / r['ours'] - 1 / r['raw']) * 1e6:.0f} us")


if __name__ == "__main__":
    main()
