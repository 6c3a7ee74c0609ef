"""The signing-key part of ``idp-bridge check``: every key file, every PKCS#11 key, and the ring as the bridge
assembles it (``keys.provider.KeyRingProvider.load`` -> ``keys.ring.load_ring``, the one way it is built).

Read-only: it never writes a verified copy, a key state or a file. Each item carries its fix.
"""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from idp_bridge.config import Config
from idp_bridge.diagnostics.report import Report
from idp_bridge.errors import ANY_ERROR
from idp_bridge.keys.provider import KeyRingProvider
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.certificates import load_certificate_pem
from idp_bridge.saml.time import format_display

if TYPE_CHECKING:
    from idp_bridge.store import Store

G = "keys"


def _fmt(when: dt.datetime) -> str:
    return format_display(when)


def check_keys(report: Report, config: Config, store: Store | None, now: dt.datetime,
               environ: Mapping[str, str] | None = None) -> tuple[Mapping[str, str], KeyRingProvider]:
    """Returns the stored key states and the provider the metadata checks build from."""
    from idp_bridge.keys.files import check_private_key_file, load_pair, scan_key_dir

    states: Mapping[str, str] = {}
    if store is not None:
        try:
            states = store.keyring.states()
        except Exception as exc:  # noqa: BLE001
            report.add(G, "key states", False, f"cannot read key states: {exc}", "run `idp-bridge db upgrade`")
    keys = KeyRingProvider(config, states=lambda: states, environ=environ)
    pairs = scan_key_dir(config.key_dir)
    hsm = keys.hsm_signers()
    if not pairs and not config.keys.pkcs11:
        report.add(G, "signing key present", False, f"no <id>.key with <id>.crt in {config.key_dir} and no "
                   "[[keys.pkcs11]] key", "run `idp-bridge init` (new deployment) or `idp-bridge keys new`, then "
                   "export and upload the metadata")
        return {}, keys
    for key_path, cert_path in pairs:
        kid = key_path.stem
        mode = stat.S_IMODE(key_path.stat().st_mode)
        try:
            check_private_key_file(key_path)
            report.add(G, f"{kid} permissions", True, f"{key_path} mode {mode:04o}")
        except ANY_ERROR as exc:
            report.add(G, f"{kid} permissions", False, exc.operator, f"chmod 600 {key_path} (and chown it to the "
                       "user the bridge runs as); consider the key exposed if others could read it",
                       expected="0600 (owner only)", actual=f"{mode:04o}")
        try:
            cert = load_certificate_pem(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            report.add(G, f"{kid} certificate", False, f"{cert_path}: {exc}",
                       f"replace {cert_path} with the PEM certificate of {key_path}")
            continue
        _check_certificate(report, config, kid, cert, now)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            report.skip(G, f"{kid} key matches certificate", "not loaded: file permissions refused")
            continue
        try:
            load_pair(key_path, cert_path, passphrase=config.key_passphrase)
            report.add(G, f"{kid} key matches certificate", True, f"{key_path.name} ↔ {cert_path.name}")
        except ANY_ERROR as exc:
            report.add(G, f"{kid} key matches certificate", False, exc.operator,
                       f"put the matching private key/certificate pair in {config.key_dir} (or remove the broken "
                       "pair); a pair that does not load stops the bridge from signing")
    for signer in hsm:
        report.add(G, f"{signer.key_id} PKCS#11 key", True, "opened in its token; the token's key matches "
                   "its certificate")
        _check_certificate(report, config, signer.key_id, signer.certificate, now)
    for kid, failure in keys.hsm_failures.items():
        report.add(G, f"{kid} PKCS#11 key", False, failure.operator,
                   "check [[keys.pkcs11]] (module, token_label, key_label, certificate) and that the PIN "
                   "environment variable is set for the bridge's user")

    if states:
        stray = [key_path for key_path, _ in pairs if key_path.stem not in states]
        report.add(G, "every key file recorded", not stray,
                   "every pair in the key folder has a recorded state" if not stray else
                   "not in the key ring (never signs, never published): " + ", ".join(str(p) for p in stray),
                   "add it with `idp-bridge keys import --key FILE --cert FILE` (state next), or remove it")
    try:
        ring = keys.load(states=states, strict=True, now=now)
        active = ring.active
        summary = ", ".join(f"{e.key_id}={e.state}" for e in ring.entries)
        report.add(G, "key states", True, f"one active key ({active.key_id}); {summary}")
    except ANY_ERROR as exc:
        report.add(G, "key states", False, exc.operator,
                   "make exactly one key active (`idp-bridge keys list`, `idp-bridge keys activate KEY_ID`), "
                   "and fix or remove any pair that does not load")
        return states, keys
    for p in ring.problems:
        if p.state != "active":
            continue
        copy = active.key_path if active.source == "verified copy" else None
        report.add(G, "active key file loads", False, f"{p.path}: {p.message} [{p.code}]",
                   (f"restore {p.path} from a backup or from the last verified copy ({copy}; `cp -p` keeps its "
                    "0600 mode); running workers keep signing, and workers started meanwhile sign with that copy"
                    if copy else f"restore {p.path} from a backup; workers started now could not sign with it"),
                   expected="the active key signs from its own file", actual=f"{p.code}")
    if not any(p.state == "active" for p in ring.problems):
        where = "its PKCS#11 token" if active.source == "pkcs11" else str(active.key_path)
        report.add(G, "active key file loads", True, f"{active.key_id} signs from {where}")
    return states, keys


def _check_certificate(report: Report, config: Config, kid: str, cert: x509.Certificate, now: dt.datetime) -> None:
    _check_key_size(report, kid, cert)
    not_after = cert.not_valid_after_utc
    warning = dt.timedelta(days=config.keys.expiry_warning_days)
    ok = not_after - now > warning
    detail = f"certificate {fingerprint(cert)} valid until {_fmt(not_after)}"
    fix = ("rotate: `idp-bridge keys new`, export the metadata, upload it in Partner Center, then activate "
           "the new key" + (" — this certificate has EXPIRED; Huawei refuses Responses signed under it"
                            if not_after <= now else f" — fewer than {warning.days} days left"))
    report.add(G, f"{kid} expiry", ok, detail, fix, expected=f"valid beyond {_fmt(now + warning)}",
               actual=_fmt(not_after))


def _check_key_size(report: Report, kid: str, cert: x509.Certificate) -> None:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        ok, detail = key.key_size >= 2048, f"RSA-{key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        ok, detail = key.curve.key_size >= 256, f"EC {key.curve.name}"
    else:
        ok, detail = False, type(key).__name__
    report.add(G, f"{kid} size", ok, detail,
               "create a new key of RSA-2048 or more (Huawei recommends RSA ≥ 2048 and SHA-256): "
               "`idp-bridge keys new --algorithm rsa-3072`", expected="RSA ≥ 2048 bits or EC P-256",
               actual=detail)
