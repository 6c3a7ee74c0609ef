"""Key files: ``<key_dir>/<key_id>.key`` (PEM private key, mode 0600, optionally passphrase-encrypted)
and ``<key_dir>/<key_id>.crt`` (PEM certificate); reading, checking, generating and writing them.

``key_id`` is derived from the certificate: the first 16 hex digits of its SHA-256 fingerprint.
Loading is fail-closed: a pair that does not load (group/other-readable file, truncated PEM, key and
certificate that do not match, RSA below 2048 bits, wrong passphrase) raises ``KeyRingError``. Files are
written atomically (beside, fsync, rename) so a reader never sees half a file of ours.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import threading
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

ALGORITHMS = ("rsa-2048", "rsa-3072", "rsa-4096", "ec-p256")
DEFAULT_ALGORITHM = "rsa-3072"
MIN_RSA_BITS = 2048


def key_id_for(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()[:16]


def check_private_key_file(path: Path) -> None:
    """Refuse a private key file that group or others may read or write."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyRingError(f"private key {str(path)!r} has mode {stat.S_IMODE(mode):04o}; it must be readable by its "
                        f"owner only (chmod 600 {str(path)!r})", code="key_file_permissions")


@dataclass(frozen=True)
class LoadedPair:
    """A key pair that passed every check, with the exact bytes that passed (for the verified copy)."""

    signer: Signer
    certificate: x509.Certificate
    key_pem: bytes
    cert_pem: bytes


def file_stat(path: Path) -> tuple[int, ...]:
    """What changes when a file is rewritten, replaced, truncated or chmod-ed (inode, size, times, mode)."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def load_pair(key_path: Path, cert_path: Path, *, passphrase: str | None = None) -> LoadedPair:
    """Read and check one key pair: permissions, size, key/certificate match."""
    check_private_key_file(key_path)
    try:
        cert_pem = cert_path.read_bytes()
    except OSError as exc:
        raise KeyRingError(f"certificate {str(cert_path)!r} cannot be read: {exc}", code="key_cert_unreadable") from exc
    try:
        key_pem = key_path.read_bytes()
    except OSError as exc:
        raise KeyRingError(f"private key {str(key_path)!r} cannot be read: {exc}", code="key_unreadable") from exc
    return parse_pair(key_pem, cert_pem, key_where=str(key_path), cert_where=str(cert_path), passphrase=passphrase)


def parse_pair(key_pem: bytes, cert_pem: bytes, *, key_where: str, cert_where: str,
               passphrase: str | None) -> LoadedPair:
    try:
        cert = load_certificate_pem(cert_pem)
    except ValueError as exc:
        raise KeyRingError(f"certificate {cert_where!r} cannot be read as PEM: {exc}", code="key_cert_unreadable") from exc
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=passphrase.encode() if passphrase else None)
    except TypeError as exc:
        raise KeyRingError(f"private key {key_where!r}: {exc} (set IDP_BRIDGE_KEY_PASSPHRASE or "
                        "IDP_BRIDGE_KEY_PASSPHRASE_FILE)", code="key_passphrase") from exc
    except ValueError as exc:
        raise KeyRingError(f"private key {key_where!r} cannot be read as PEM: {exc}", code="key_unreadable") from exc
    if not isinstance(private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyRingError(f"private key {key_where!r} is {type(private_key).__name__}; expected RSA or ECDSA",
                        code="key_algorithm")
    check_certificate_key(cert, cert_where)
    try:
        signer = PrivateKeySigner(private_key, cert, key_id=key_id_for(cert))
    except SigningKeyError as exc:
        raise KeyRingError(f"{key_where!r}: {exc.operator}", code=exc.code) from exc
    return LoadedPair(signer, cert, key_pem, cert_pem)


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


def write_private(path: Path, data: bytes) -> None:
    """Create a 0600 file atomically: write beside it (a name unique to this process and thread), fsync, then
    rename into place; a reader sees the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_pair(key_dir: Path, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
               cert: x509.Certificate, *, passphrase: str | None = None) -> tuple[str, Path, Path]:
    """Store a pair under its key id; the certificate lands last so a scan never sees half a pair."""
    key_dir.mkdir(parents=True, exist_ok=True)
    kid = key_id_for(cert)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption())
    key_path, cert_path = key_dir / f"{kid}.key", key_dir / f"{kid}.crt"
    write_private(key_path, private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)
    return kid, key_path, cert_path


def generate_key(key_dir: Path, *, common_name: str, algorithm: str = DEFAULT_ALGORITHM, days: int = 730,
                 passphrase: str | None = None) -> tuple[str, Path, Path]:
    """Create a key and a self-signed certificate in ``key_dir``; returns (key id, key path, cert path)."""
    private_key = _new_private_key(algorithm)
    cert = self_signed_certificate(private_key, common_name=common_name, days=days)
    return write_pair(key_dir, private_key, cert, passphrase=passphrase)
