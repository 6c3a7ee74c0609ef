"""Live pick-up: running code sees key changes without a restart, and a bad key file never replaces the
key that signs (a .key before its .crt, a truncated PEM, a readable-by-others key, a mismatched pair,
a 1024-bit key, an expired certificate on the key made active). Each refusal is logged clearly."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pytest

from idp_bridge.keys.files import generate_key, key_id_for
from idp_bridge.keys.provider import KeyRingProvider
from idp_bridge.store import Store
from tests.journey import Env, make_env
from tests.pki import TestKey, make_key


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return make_env(tmp_path / "bridge", db_url, key_days=30)  # a 30-day key: the expiry-warning tests rely on it


def provider(env: Env, store: Store) -> KeyRingProvider:
    return KeyRingProvider(env.config, states=store.keyring.states, reload_seconds=0)  # reload on every call


def drop_pair(key_dir: Path, key: TestKey, *, cert: bytes | None = None, key_pem: bytes | None = None,
              mode: int = 0o600) -> str:
    kid = key_id_for(key.certificate)
    key_path = key_dir / f"{kid}.key"
    key_path.write_bytes(key_pem if key_pem is not None else key.key_pem)
    os.chmod(key_path, mode)
    (key_dir / f"{kid}.crt").write_bytes(cert if cert is not None else key.cert_pem)
    return kid


def test_a_new_key_and_an_activation_are_picked_up(env: Env, store: Store) -> None:
    keys = provider(env, store)
    first = keys.ring().active.key_id
    store.keyring.register(first, state="active", now=dt.datetime.now(dt.UTC))
    kid, _, _ = generate_key(env.config.key_dir, common_name="x", algorithm="ec-p256", days=30)
    assert [e.key_id for e in keys.ring().entries] == [first]  # no recorded state yet: not used
    store.keyring.register(kid, state="next", now=dt.datetime.now(dt.UTC))
    assert {e.key_id: e.state for e in keys.ring().entries} == {first: "active", kid: "next"}
    assert [e.key_id for e in keys.ring().published] == [kid, first]
    store.keyring.set_state(kid, "active", now=dt.datetime.now(dt.UTC))
    assert keys.ring().active.key_id == kid
    store.keyring.set_state(first, "retired", now=dt.datetime.now(dt.UTC))
    assert [e.key_id for e in keys.ring().entries] == [kid]  # retired keys are not loaded


@pytest.mark.parametrize("case", ["key_before_cert", "truncated_key", "truncated_cert", "world_readable",
                                  "mismatch", "rsa_1024", "expired_active"])
def test_a_bad_key_file_never_replaces_the_signing_key(env: Env, store: Store, case: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    now = dt.datetime.now(dt.UTC)
    keys = provider(env, store)
    good = keys.ring().active
    store.keyring.register(good.key_id, state="active", now=now)
    key_dir = env.config.key_dir
    bad = make_key("bad", bits=1024 if case == "rsa_1024" else 2048,
                   not_before=now - dt.timedelta(days=400) if case == "expired_active" else None)
    kid = key_id_for(bad.certificate)
    if case == "key_before_cert":
        (key_dir / f"{kid}.key").write_bytes(bad.key_pem)
        os.chmod(key_dir / f"{kid}.key", 0o600)
    elif case == "truncated_key":
        drop_pair(key_dir, bad, key_pem=bad.key_pem[: len(bad.key_pem) // 2])
    elif case == "truncated_cert":
        drop_pair(key_dir, bad, cert=bad.cert_pem[:200])
    elif case == "world_readable":
        drop_pair(key_dir, bad, mode=0o644)
    elif case == "mismatch":
        drop_pair(key_dir, bad, key_pem=make_key("other").key_pem)
    else:
        drop_pair(key_dir, bad)
    store.keyring.register(kid, state="next", now=now)
    if case == "expired_active":  # recorded as the active key: the ring must not switch to it
        store.keyring.set_state(kid, "active", now=now)
    caplog.set_level(logging.ERROR, logger="idp_bridge.keys")
    ring = keys.ring()
    assert ring.active.key_id == good.key_id and ring.active.fingerprint == good.fingerprint
    assert kid not in [e.key_id for e in ring.entries if e.state == "active"]
    expected = {"key_before_cert": None, "truncated_key": "cannot be read as PEM",
                "truncated_cert": "cannot be read as PEM", "world_readable": "chmod 600",
                "mismatch": "does not match", "rsa_1024": "at least 2048 bits", "expired_active": "expired"}[case]
    if expected is None:  # only half a pair: not a key yet, nothing to refuse
        assert kid not in [e.key_id for e in ring.entries]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    else:
        assert any(expected in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert keys.last_error and expected in keys.last_error
    # once the file is complete and good, the key is taken (a half-written key heals by itself)
    if case in ("key_before_cert", "truncated_key"):
        drop_pair(key_dir, bad)
        assert {e.key_id: e.state for e in keys.ring().entries}[kid] == "next"


def test_start_up_refuses_a_bad_key(env: Env, store: Store) -> None:
    from idp_bridge.errors import KeyRingError

    os.chmod(next(env.config.key_dir.glob("*.key")), 0o640)
    with pytest.raises(KeyRingError) as exc:
        provider(env, store).ring()
    assert exc.value.code == "key_file_permissions"


def test_healthz_reports_the_refusal_and_expiry(env: Env, store: Store) -> None:
    from idp_bridge.web import create_app

    app = create_app(env.config)
    bridge = app.extensions["idp_bridge"]
    bridge.keys._reload = 0
    assert store.keyring.states() == {bridge.keys.ring().active.key_id: "active"}  # recorded at start-up
    bad = make_key("bad")
    kid = drop_pair(env.config.key_dir, bad, mode=0o666)
    store.keyring.register(kid, state="next", now=dt.datetime.now(dt.UTC))
    bridge.keys.refresh()  # what the background refresh does within reload_seconds (/healthz never loads keys)
    report = app.test_client().get("/healthz").get_json()
    assert report["status"] == "warn"
    assert "chmod 600" in report["key_reload_error"]
    assert [k["state"] for k in report["keys"]] == ["active"]
    assert report["keys"][0]["expiring"] is True  # the test key is valid for 30 days


def test_expiry_is_warned_in_the_log_once(env: Env, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="idp_bridge.keys")
    keys = provider(env, store)  # the env key is valid for 30 days; the warning window is 30 days
    active = keys.ring().active
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "expires" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    message = warnings[0].getMessage()
    assert active.key_id in message and active.not_after.isoformat() in message and "keys status" in message
    keys.ring()
    keys.ring()  # reloads: the same key is not warned about again
    assert len([r for r in caplog.records if "expires" in r.getMessage()]) == 1


def test_no_expiry_warning_for_a_long_lived_key(tmp_path: Path, db_url: str, store: Store,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="idp_bridge.keys")
    env = make_env(tmp_path / "long", db_url, key_days=365)
    provider(env, store).ring()
    assert not [r for r in caplog.records if "expires" in r.getMessage()]
