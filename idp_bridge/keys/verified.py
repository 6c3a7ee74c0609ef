"""The last verified copy of each signing key, so that a broken key file never takes a node down.

When a key pair passes every check in a serving process, the exact bytes that passed are copied to
``<key_dir>/.verified/<key_id>.key`` and ``.crt`` (directory 0700, files 0600). A worker that starts
while ``<key_id>.key`` is corrupted, truncated, half-replaced or missing signs with this copy instead -
after loading it with every check again (permissions, PEM, passphrase, key/certificate match, the
certificate's fingerprint being the key id the database names), so it fails closed exactly like the
original. ``/healthz`` then says ``fail`` and names the broken file until it is restored.

Why beside the keys and not in the database: the copy is the very bytes of the original - encrypted
with the key passphrase when the original is, plain 0600 when it is - on the same host, owned by the
same user, so it is readable by exactly who could read the original. In the database the private
key would also sit in every backup and replica and be readable by anyone holding the database URL,
which every node's config carries; an unencrypted key there would be a plain secret anyone with read
access to one table could take. Never written on the signing path: only when a key (re)loads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from idp_bridge.errors import KeyRingError
from idp_bridge.keys.files import LoadedPair, key_id_for, load_pair, write_private

log = logging.getLogger("idp_bridge.keys")

VERIFIED_DIR = ".verified"


class VerifiedCopies:
    """The ``.verified`` folder of one key directory. ``save`` is a no-op unless ``writable``."""

    def __init__(self, key_dir: Path, *, writable: bool = False) -> None:
        self.dir = key_dir / VERIFIED_DIR
        self.writable = writable
        self._saved: set[tuple[str, bytes, bytes]] = set()
        self._warned = False

    def paths(self, key_id: str) -> tuple[Path, Path]:
        return self.dir / f"{key_id}.key", self.dir / f"{key_id}.crt"

    def save(self, key_id: str, pair: LoadedPair) -> None:
        """Keep the bytes that just verified (certificate first: the key is what makes a copy usable)."""
        if not self.writable or (key_id, pair.key_pem, pair.cert_pem) in self._saved:
            return
        key_path, cert_path = self.paths(key_id)
        try:
            if not (key_path.exists() and key_path.read_bytes() == pair.key_pem
                    and cert_path.exists() and cert_path.read_bytes() == pair.cert_pem):
                self.dir.mkdir(mode=0o700, exist_ok=True)
                os.chmod(self.dir, 0o700)
                write_private(cert_path, pair.cert_pem)
                write_private(key_path, pair.key_pem)
                fd = os.open(self.dir, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                log.debug("signing key %s verified; its copy is kept in %s", key_id, self.dir)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot keep a verified copy of signing key %s in %s (%s): if its key file breaks, "
                            "workers started after that cannot sign; let the bridge's user write to %s",
                            key_id, self.dir, exc, self.dir.parent)
            return
        self._saved.add((key_id, pair.key_pem, pair.cert_pem))

    def load(self, key_id: str, *, passphrase: str | None) -> LoadedPair | None:
        """The verified copy of ``key_id``, checked again; None when there is none or it does not load."""
        key_path, cert_path = self.paths(key_id)
        if not (key_path.exists() and cert_path.exists()):
            return None
        try:
            pair = load_pair(key_path, cert_path, passphrase=passphrase)
            if key_id_for(pair.certificate) != key_id:
                raise KeyRingError(f"{str(cert_path)!r} holds certificate {key_id_for(pair.certificate)}, not {key_id}",
                                code="key_id_mismatch")
        except KeyRingError as exc:
            log.error("the verified copy of signing key %s does not load either: %s [%s]", key_id, exc.operator,
                      exc.code)
            return None
        return pair

    def discard(self, key_id: str) -> None:
        """A retired key's copy goes with it."""
        for path in self.paths(key_id):
            path.unlink(missing_ok=True)
