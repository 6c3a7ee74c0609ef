"""The signing key ring: key files in the key directory, their certificates and states.

Files: ``<key_dir>/<key_id>.key`` (PEM private key, mode 0600, optionally passphrase-encrypted)
and ``<key_dir>/<key_id>.crt`` (PEM certificate). ``key_id`` is derived from the certificate:
the first 16 hex digits of its SHA-256 fingerprint.

States (``next``, ``active``, ``retiring``, ``retired``) are kept in the database so that every
worker and node agrees; this module takes them as a mapping. A single key with no recorded
state is the active one (a fresh ``idp-bridge init``, bootstrap rule); once states are recorded, a
key file with no state is not used (it is being added, or it is a stray file). ``retired`` keys are
not loaded at all.

Loading is fail-closed per key: a key that does not load (group/other-readable file, truncated
PEM, key and certificate that do not match, RSA below 2048 bits, wrong passphrase, expired
certificate on the active key) is refused with a :class:`KeyProblem`. ``strict`` loading (start-up,
commands) raises the first problem; a running worker's reload keeps the key it already had.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from idp_bridge.errors import KeyRingError, SigningKeyError
from idp_bridge.saml.algorithms import fingerprint
from idp_bridge.saml.certificates import load_certificate_pem
from idp_bridge.saml.signing import PrivateKeySigner, Signer

STATES = ("next", "active", "retiring", "retired")
PUBLISHED_STATES = ("next", "active", "retiring")
ALGORITHMS = ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256")
DEFAULT_ALGORITHM = "rsa-3072"
MIN_RSA_BITS = 2048


def key_id_for(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()[:16]


@dataclass(frozen=True)
class KeyEntry:
    key_id: str
    certificate: x509.Certificate
    signer: Signer
    key_path: Path
    cert_path: Path
    state: str

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    @property
    def algorithm(self) -> str:
        key = self.certificate.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            return f"rsa-{key.key_size}"
        if isinstance(key, ec.EllipticCurvePublicKey):
            return f"ec-{key.curve.name}"
        return type(key).__name__


@dataclass(frozen=True)
class KeyProblem:
    """A key file (or PKCS#11 key) that was refused, and why."""

    key_id: str
    path: str
    code: str
    message: str


@dataclass(frozen=True)
class KeyRing:
    entries: tuple[KeyEntry, ...]
    problems: tuple[KeyProblem, ...] = ()

    @property
    def active(self) -> KeyEntry:
        active = [e for e in self.entries if e.state == "active"]
        if len(active) != 1:
            ids = ", ".join(e.key_id for e in active) or "none"
            raise KeyRingError(f"exactly one signing key must be active; active now: {ids}", code="key_no_active")
        return active[0]

    @property
    def published(self) -> tuple[KeyEntry, ...]:
        """Keys listed in metadata: next, active and retiring, in that order."""
        order = {s: i for i, s in enumerate(PUBLISHED_STATES)}
        return tuple(sorted((e for e in self.entries if e.state in order), key=lambda e: order[e.state]))

    def get(self, key_id: str) -> KeyEntry:
        for e in self.entries:
            if e.key_id == key_id:
                return e
        raise KeyRingError(f"no key {key_id!r} in the key ring (have: {', '.join(e.key_id for e in self.entries)})",
                        code="key_unknown")


def check_private_key_file(path: Path) -> None:
    """Refuse a private key file that group or others may read or write."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyRingError(f"private key {str(path)!r} has mode {stat.S_IMODE(mode):04o}; it must be readable by its "
                        f"owner only (chmod 600 {str(path)!r})", code="key_file_permissions")


def load_pair(key_path: Path, cert_path: Path, *, passphrase: str | None = None) -> tuple[Signer, x509.Certificate]:
    """Load and check one key pair: permissions, size, key/certificate match."""
    check_private_key_file(key_path)
    try:
        cert = load_certificate_pem(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise KeyRingError(f"certificate {str(cert_path)!r} cannot be read as PEM: {exc}", code="key_cert_unreadable") from exc
    try:
        private_key = serialization.load_pem_private_key(
            key_path.read_bytes(), password=passphrase.encode() if passphrase else None)
    except TypeError as exc:
        raise KeyRingError(f"private key {str(key_path)!r}: {exc} (set IDP_BRIDGE_KEY_PASSPHRASE or "
                        "IDP_BRIDGE_KEY_PASSPHRASE_FILE)", code="key_passphrase") from exc
    except (OSError, ValueError) as exc:
        raise KeyRingError(f"private key {str(key_path)!r} cannot be read as PEM: {exc}", code="key_unreadable") from exc
    if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyRingError(f"private key {str(key_path)!r} is {type(private_key).__name__}; expected RSA or ECDSA",
                        code="key_algorithm")
    check_certificate_key(cert, str(cert_path))
    try:
        return PrivateKeySigner(private_key, cert, key_id=key_id_for(cert)), cert
    except SigningKeyError as exc:
        raise KeyRingError(f"{str(key_path)!r}: {exc.operator}", code=exc.code) from exc


def check_certificate_key(cert: x509.Certificate, where: str) -> None:
    """Refuse RSA certificates below 2048 bits and key types we cannot sign with."""
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            raise KeyRingError(f"{where}: RSA key is {public.key_size} bits; at least {MIN_RSA_BITS} bits are "
                            "required (Huawei recommends RSA >= 2048)", code="key_too_small")
    elif not isinstance(public, ec.EllipticCurvePublicKey):
        raise KeyRingError(f"{where}: the certificate holds a {type(public).__name__}; expected RSA or ECDSA",
                        code="key_algorithm")


def check_not_expired(cert: x509.Certificate, where: str, now: dt.datetime | None = None) -> None:
    now = now or dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc <= now:
        raise KeyRingError(f"{where}: certificate {fingerprint(cert)} expired at "
                        f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ} (now {now:%Y-%m-%dT%H:%M:%SZ}); "
                        "an SP refuses its signatures", code="key_expired")


def scan_key_dir(key_dir: Path) -> list[tuple[Path, Path]]:
    """Every ``<id>.key`` with its ``<id>.crt`` beside it."""
    if not key_dir.is_dir():
        return []
    pairs = []
    for key_path in sorted(key_dir.glob("*.key")):
        cert_path = key_path.with_suffix(".crt")
        if cert_path.exists():
            pairs.append((key_path, cert_path))
    return pairs


def load_key_ring(key_dir: Path, *, states: Mapping[str, str] | None = None,
                  passphrase: str | None = None, previous: KeyRing | None = None, strict: bool = True,
                  extra_signers: Sequence[Signer] = (), now: dt.datetime | None = None) -> KeyRing:
    """Load the key ring from ``key_dir`` (plus ``extra_signers``, e.g. PKCS#11 keys).

    A refused key is listed in ``KeyRing.problems``, and a key that ``previous`` held is kept as it
    was loaded then. ``strict`` (start-up): a refused *active* key raises KeyRingError instead, since
    nothing could sign; a refused next or retiring key only drops out, so a bad file beside the
    signing key can never stop a worker from (re)starting.
    """
    states = dict(states or {})
    now = now or dt.datetime.now(dt.UTC)
    pairs = scan_key_dir(key_dir)
    bootstrap = not states and len(pairs) + len(extra_signers) == 1
    previous_by_id = {e.key_id: e for e in previous.entries} if previous else {}
    entries: list[KeyEntry] = []
    problems: list[KeyProblem] = []

    def refuse(kid: str, path: str, state: str, exc: KeyRingError | SigningKeyError) -> None:
        if strict and state == "active":
            raise exc
        problems.append(KeyProblem(kid, path, exc.code, exc.operator))
        kept = previous_by_id.get(kid)
        if kept is not None:  # as it was: its old state too, so a refused key never becomes the signer
            entries.append(kept)

    for key_path, cert_path in pairs:
        file_id = key_path.stem
        state = states.get(file_id) or ("active" if bootstrap else None)
        if state not in PUBLISHED_STATES:
            continue  # retired keys are not loaded; unrecorded keys are not used
        try:
            signer, cert = load_pair(key_path, cert_path, passphrase=passphrase)
            kid = key_id_for(cert)
            if kid != file_id:
                raise KeyRingError(f"{str(cert_path)!r} holds certificate {kid}, not {file_id} (the file name "
                                "must be the key id)", code="key_id_mismatch")
            if state == "active":
                check_not_expired(cert, str(cert_path), now)
        except (KeyRingError, SigningKeyError) as exc:
            refuse(file_id, str(key_path), state, exc)
            continue
        entries.append(KeyEntry(kid, cert, signer, key_path, cert_path, state))
    for signer in extra_signers:
        state = states.get(signer.key_id) or ("active" if bootstrap else None)
        if state not in PUBLISHED_STATES:
            continue
        try:
            check_certificate_key(signer.certificate, f"PKCS#11 key {signer.key_id}")
            if state == "active":
                check_not_expired(signer.certificate, f"PKCS#11 key {signer.key_id}", now)
        except (KeyRingError, SigningKeyError) as exc:
            refuse(signer.key_id, f"pkcs11:{signer.key_id}", state, exc)
            continue
        entries.append(KeyEntry(signer.key_id, signer.certificate, signer, Path(f"pkcs11:{signer.key_id}"),
                                Path(f"pkcs11:{signer.key_id}"), state))
    if not entries and not problems:
        raise KeyRingError(f"no usable signing key in {str(key_dir)!r} (states: "
                        f"{', '.join(f'{k}={v}' for k, v in sorted(states.items())) or 'none recorded'}); "
                        "run `idp-bridge init` or `idp-bridge keys new`", code="key_none")
    return KeyRing(tuple(entries), tuple(problems))


def expiring(entries: Sequence[KeyEntry], *, days: int = 30, now: dt.datetime | None = None) -> list[KeyEntry]:
    """Keys whose certificate ends within ``days``."""
    now = now or dt.datetime.now(dt.UTC)
    return [e for e in entries if e.not_after - now < dt.timedelta(days=days)]


def _new_private_key(algorithm: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if algorithm == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm.startswith("rsa-") and algorithm in ALGORITHMS:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(algorithm[4:]))
    raise KeyRingError(f"key algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}", code="key_algorithm")


def self_signed_certificate(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, *, common_name: str,
                            days: int, now: dt.datetime | None = None) -> x509.Certificate:
    now = now or dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create a 0600 file atomically: write beside it, then rename into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_pair(key_dir: Path, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
               cert: x509.Certificate, *, passphrase: str | None = None) -> tuple[str, Path, Path]:
    """Store a pair under its key id; the certificate lands last so a scan never sees half a pair."""
    key_dir.mkdir(parents=True, exist_ok=True)
    kid = key_id_for(cert)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption())
    key_path, cert_path = key_dir / f"{kid}.key", key_dir / f"{kid}.crt"
    _write_private(key_path, private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)
    return kid, key_path, cert_path


def generate_key(key_dir: Path, *, common_name: str, algorithm: str = DEFAULT_ALGORITHM, days: int = 730,
                 passphrase: str | None = None) -> tuple[str, Path, Path]:
    """Create a key and a self-signed certificate in ``key_dir``; returns (key id, key path, cert path)."""
    private_key = _new_private_key(algorithm)
    cert = self_signed_certificate(private_key, common_name=common_name, days=days)
    return write_pair(key_dir, private_key, cert, passphrase=passphrase)


def certificates(entries: Sequence[KeyEntry]) -> list[x509.Certificate]:
    return [e.certificate for e in entries]
