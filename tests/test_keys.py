"""The key ring: files, states, transitions (exactly one active, enforced by the database), passphrase
keys, and the overlap: python3-saml holding both certificates (x509certMulti) accepts either key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import insert

from idp_bridge.errors import KeyRingError
from idp_bridge.huawei.attributes import Customer
from idp_bridge.idp.identity_provider import IdentityProvider, PendingLogin
from idp_bridge.keys.files import generate_key
from idp_bridge.keys.ring import load_ring
from idp_bridge.store import Store
from idp_bridge.store.tables import KeyStateRow
from tests.journey import SP_ACS, SP_ENTITY_ID, make_env, python3_saml_validate

NOW = dt.datetime(2026, 5, 10, 12, 0, tzinfo=dt.UTC)


def test_bootstrap_unrecorded_and_retired(tmp_path: Path) -> None:
    a, _, _ = generate_key(tmp_path, common_name="a", algorithm="rsa-2048", days=30)
    assert load_ring(tmp_path).active.key_id == a  # a single key with no state: active
    b, _, _ = generate_key(tmp_path, common_name="b", algorithm="ec-p256", days=30)
    with pytest.raises(KeyRingError) as exc:
        load_ring(tmp_path)  # two keys and no states: none may sign
    assert exc.value.code == "key_none"
    ring = load_ring(tmp_path, states={a: "active"})
    assert [e.key_id for e in ring.entries] == [a]  # b has no state: not used
    ring = load_ring(tmp_path, states={a: "retired", b: "active"})
    assert [(e.key_id, e.algorithm) for e in ring.entries] == [(b, "ec-secp256r1")]


def test_passphrase_protected_key(tmp_path: Path) -> None:
    generate_key(tmp_path, common_name="a", algorithm="rsa-2048", days=30, passphrase="pass phrase 1")
    assert b"ENCRYPTED" in next(tmp_path.glob("*.key")).read_bytes()
    assert load_ring(tmp_path, passphrase="pass phrase 1").active
    with pytest.raises(KeyRingError) as exc:
        load_ring(tmp_path)
    assert exc.value.code == "key_passphrase"
    with pytest.raises(KeyRingError) as exc:
        load_ring(tmp_path, passphrase="wrong")
    assert exc.value.code == "key_unreadable"


def test_transitions_keep_exactly_one_active(store: Store) -> None:
    store.keyring.register("k1", state="active", now=NOW)
    store.keyring.register("k2", state="next", now=NOW)
    with pytest.raises(KeyRingError):
        store.keyring.register("k3", state="active", now=NOW)
    assert store.keyring.set_state("k2", "active", now=NOW) == "k1"
    assert store.keyring.states() == {"k1": "retiring", "k2": "active"}
    with pytest.raises(KeyRingError) as exc:
        store.keyring.set_state("k2", "retired", now=NOW)
    assert exc.value.code == "key_transition"
    assert store.keyring.set_state("k1", "active", now=NOW) == "k2"  # roll back
    store.keyring.set_state("k2", "retired", now=NOW)
    with pytest.raises(KeyRingError):
        store.keyring.set_state("k2", "active", now=NOW)  # retired is final
    assert list(store.keyring.states().values()).count("active") == 1


def test_the_database_refuses_a_second_active_row(store: Store) -> None:
    store.keyring.register("k1", state="active", now=NOW)
    with pytest.raises(sqlalchemy.exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(insert(KeyStateRow).values(key_id="k2", state="active", changed_at=NOW, published_at=NOW))


def test_evidence_trail(store: Store) -> None:
    store.keyring.record_metadata_fetch(remote_addr="10.0.0.1", user_agent="sp", etag='"e1"', key_ids=["k1", "k2"],
                                now=NOW, sp="huawei-cn")
    store.keyring.record_metadata_fetch(remote_addr="10.0.0.2", user_agent="curl", etag='"e0"', key_ids=["k1"], now=NOW)
    assert [(f.sp, f.remote_addr) for f in store.keyring.fetches_with_key("k2")] == [("huawei-cn", "10.0.0.1")]
    assert store.keyring.fetches_with_key("k2", since=NOW + dt.timedelta(seconds=1)) == []
    store.keyring.confirm_published("k2", "huawei-cn", now=NOW, note="uploaded")
    assert [(p.sp, p.note) for p in store.keyring.publications("k2")] == [("huawei-cn", "uploaded")]


def test_python3_saml_with_both_certificates_accepts_either_key(tmp_path: Path, db_url: str) -> None:
    env = make_env(tmp_path, db_url)
    store = Store.from_url(db_url)
    bridge = IdentityProvider(env.config, store)
    bridge.keys._reload = 0
    now = dt.datetime.now(dt.UTC)
    old = bridge.keys.ring().active.key_id
    store.keyring.register(old, state="active", now=now)
    new, _, _ = generate_key(env.config.key_dir, common_name="n", algorithm="rsa-2048", days=30)
    store.keyring.register(new, state="next", now=now)
    overlap = bridge.metadata()
    assert overlap.key_ids == (new, old)

    from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser

    idp = OneLogin_Saml2_IdPMetadataParser.parse(overlap.xml.decode())["idp"]
    assert len(idp["x509certMulti"]["signing"]) == 2  # python3-saml holds both certificates

    customer = Customer(user_id="cust-1", email="c@example.com")

    def issue(request_id: str) -> str:
        pending = PendingLogin("huawei-cn", SP_ENTITY_ID, request_id, SP_ACS, None, now.isoformat())
        return bridge.issue_response(pending, customer, authn_instant=now, session_index="_s").saml_response

    signed_by_old = issue("_r-old")
    store.keyring.set_state(new, "active", now=now)
    assert bridge.keys.ring().active.key_id == new
    signed_by_new = issue("_r-new")
    for response, rid in ((signed_by_old, "_r-old"), (signed_by_new, "_r-new")):
        ok, error, _ = python3_saml_validate(response, idp_metadata_xml=overlap.xml, request_id=rid)
        assert ok, error
    store.keyring.set_state(old, "retired", now=now)
    after = bridge.metadata()
    assert after.key_ids == (new,) and after.etag != overlap.etag
    ok, _, _ = python3_saml_validate(signed_by_old, idp_metadata_xml=after.xml, request_id="_r-old")
    assert not ok  # the retired key is no longer trusted by an SP with fresh metadata
    store.dispose()
