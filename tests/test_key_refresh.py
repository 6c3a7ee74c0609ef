"""Keys parsed once and kept (issue 10.1), and the last verified copy (issue 11.1), below the web layer.

A serving provider answers ``ring()`` from memory: the request thread never reads the key states nor parses
a key; only the background refresh does, and only a pair whose files changed is parsed again (an activation
parses nothing). The verified copy keeps the original's protection (the same bytes: encrypted when the
original is, 0600 in a 0700 folder), is checked like the original when used, and goes when its key retires.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from idp_bridge.errors import KeyRingError
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.keys.files import generate_key
from idp_bridge.keys.provider import KeyRingProvider
from idp_bridge.keys.ring import load_ring
from idp_bridge.keys.rotation import Rotation
from idp_bridge.keys.verified import VerifiedCopies
from idp_bridge.store import Store
from tests.journey import Env, make_env
from tests.pki import make_key


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return make_env(tmp_path / "bridge", db_url)


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.02)
    return False


def test_requests_read_the_ring_from_memory_and_only_changed_files_are_parsed(env: Env, store: Store) -> None:
    readers: list[str] = []

    def states() -> Mapping[str, str]:
        readers.append(threading.current_thread().name)
        return store.keyring.states()

    now = dt.datetime.now(dt.UTC)
    (first_key,) = env.config.key_dir.glob("*.key")
    store.keyring.register(first_key.stem, state="active", now=now)
    keys = KeyRingProvider(env.config, states=states, reload_seconds=0.05)
    keys.serve()
    try:
        first = keys.ring().active
        readers.clear()
        for _ in range(2000):  # requests
            assert keys.ring().active is first
        assert wait_for(lambda: len(readers) >= 3)
        assert set(readers) == {"key-ring-refresh"}, set(readers)  # never the request thread

        kid, _, _ = generate_key(env.config.key_dir, common_name="n", algorithm="rsa-2048", days=30)
        store.keyring.register(kid, state="next", now=now)
        assert wait_for(lambda: kid in {e.key_id for e in keys.ring().entries})
        assert keys.ring().get(first.key_id).signer is first.signer  # the unchanged pair was not parsed again
        second = keys.ring().get(kid)
        store.keyring.set_state(kid, "active", now=now)
        assert wait_for(lambda: keys.ring().active.key_id == kid)
        assert keys.ring().active.signer is second.signer  # an activation parses nothing
        assert keys.ring().get(first.key_id).state == "retiring"
    finally:
        keys.close()


def test_the_verified_copy_keeps_the_originals_protection_and_is_checked_again(tmp_path: Path) -> None:
    kid, key_path, cert_path = generate_key(tmp_path, common_name="a", algorithm="rsa-2048", days=30,
                                            passphrase="pass phrase 1")
    copies = VerifiedCopies(tmp_path, writable=True)
    load_ring(tmp_path, passphrase="pass phrase 1", verified=copies)
    copy_key, copy_cert = copies.paths(kid)
    assert copy_key.read_bytes() == key_path.read_bytes() and b"ENCRYPTED" in copy_key.read_bytes()
    assert copy_cert.read_bytes() == cert_path.read_bytes()
    assert copy_key.stat().st_mode & 0o777 == 0o600 and copies.dir.stat().st_mode & 0o777 == 0o700

    key_path.write_bytes(key_path.read_bytes()[:200])  # the original breaks
    started = load_ring(tmp_path, states={kid: "active"}, passphrase="pass phrase 1",
                        verified=VerifiedCopies(tmp_path))  # a worker starting now
    assert started.active.source == "verified copy" and started.active.key_id == kid
    (problem,) = started.problems
    assert problem.state == "active" and problem.path == str(key_path) and "verified copy" in problem.message
    with pytest.raises(KeyRingError) as exc:  # the copy needs the passphrase as much as the original
        load_ring(tmp_path, states={kid: "active"}, passphrase="wrong", verified=VerifiedCopies(tmp_path))
    assert exc.value.code == "key_unreadable"
    with pytest.raises(KeyRingError):  # and a plain strict load (no copies) refuses the broken file
        load_ring(tmp_path, states={kid: "active"}, passphrase="pass phrase 1")


@pytest.mark.parametrize("tamper", ["other key", "other certificate"])
def test_a_copy_that_does_not_match_is_never_signed_with(tmp_path: Path, tamper: str) -> None:
    kid, key_path, _ = generate_key(tmp_path, common_name="a", algorithm="rsa-2048", days=30)
    copies = VerifiedCopies(tmp_path, writable=True)
    load_ring(tmp_path, verified=copies)
    copy_key, copy_cert = copies.paths(kid)
    other = make_key("other")
    if tamper == "other key":
        copy_key.write_bytes(other.key_pem)
    else:
        copy_cert.write_bytes(other.cert_pem)
    key_path.write_bytes(b"-----BEGIN " + b"PRIVATE KEY-----\ngarbage\n")  # a broken file, not a key
    with pytest.raises(KeyRingError):
        load_ring(tmp_path, states={kid: "active"}, verified=VerifiedCopies(tmp_path))


def test_a_retired_keys_copy_goes_with_it(env: Env, store: Store) -> None:
    config = dataclasses.replace(env.config, keys=dataclasses.replace(env.config.keys, publish_lead_seconds=0,
                                                                      retiring_grace_seconds=0))
    bridge = IdentityProvider(config, store)
    rotation = Rotation(bridge)
    rotation.bootstrap()
    bridge.keys.serve()
    try:
        first = bridge.keys.ring().active.key_id
        second = rotation.new_key(algorithm="rsa-2048", days=30)
        bridge.keys.refresh()
        assert all(p.exists() for p in bridge.keys.verified.paths(first) + bridge.keys.verified.paths(second))
        rotation.activate(second, force=True, reason="test")
        rotation.retire(first)
        assert not any(p.exists() for p in bridge.keys.verified.paths(first))
        assert all(p.exists() for p in bridge.keys.verified.paths(second))
    finally:
        bridge.keys.close()
