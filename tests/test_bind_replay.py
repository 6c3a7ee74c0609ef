"""Huawei binding notices cannot be replayed (issue 8 item 1), through the Flask app on SQLite and PostgreSQL.

Each attack from the issue is replayed with the very form fields Huawei's honest notice carried, beside
the honest flow: a replay lands normally, changes nothing, queues no webhook and is audited as a replay;
a new notice the state does not allow (no first-login jump, an unbind naming another account) is 409.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from idp_bridge.devtools.simulator.partner_flows import build_bind_notification
from idp_bridge.huawei.binding import BindingError
from idp_bridge.idp.identity_provider import IdentityProvider
from idp_bridge.partner.service import accept_bind_notification
from idp_bridge.saml.signing import PrivateKeySigner
from idp_bridge.store import Store
from idp_bridge.web import create_app
from tests.conftest import FAST_PASSWORD_HASHER
from tests.journey import Env
from tests.pki import cached_key
from tests.platform_env import SHOP, mint, platform_env

SERVICE = "https://console.huaweicloud.com/"
LANDING = SHOP + "/huawei/bound"
USER = "cust-1001"


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> Env:
    return platform_env(tmp_path / "bridge", db_url, webhook_url=SHOP + "/hooks")  # webhooks queued, not sent


@pytest.fixture
def app(env: Env) -> Iterator[Flask]:
    store = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    application = create_app(bridge=IdentityProvider(env.config, store))
    yield application
    store.dispose()


def bridge_of(app: Flask) -> IdentityProvider:
    b: IdentityProvider = app.extensions["idp_bridge"]
    return b


def store_of(app: Flask) -> Store:
    return bridge_of(app).store


def notice(domain: str, action: int = 0, user: str = USER) -> dict[str, str]:
    key = cached_key("huawei-sp")
    return build_bind_notification(PrivateKeySigner(key.private_key, key.certificate), x_user_id=user,
                                   domain_name="hw_" + domain, domain_id="dom-" + domain, bind_action=action)


def jump(app: Flask, env: Env, user: str = USER) -> FlaskClient:
    """The bridge sends the customer to Huawei; asserts it was a first-login jump (isFirstLogin=true)."""
    client = app.test_client()
    resp = client.get("/go", query_string={"token": mint(env, user), "service": SERVICE})
    assert resp.status_code == 302
    assert parse_qs(urlsplit(resp.headers["Location"]).query)["isFirstLogin"] == ["true"]
    return client


def post(app: Flask, form: dict[str, str]) -> tuple[int, str]:
    resp = app.test_client().post("/huawei/bind", data=form)
    return resp.status_code, resp.headers.get("Location", "")


def state(app: Flask, user: str = USER) -> tuple[bool, str | None] | None:
    b = store_of(app).bindings.get(user)
    return None if b is None else (b.bound, b.domain_id)


def webhooks(app: Flask) -> list[tuple[bool, str | None]]:
    return [(m.payload["bound"], m.payload["domainId"]) for m in reversed(store_of(app).outbox.messages())]


def last_event(app: Flask) -> tuple[str, str, str | None, str | None]:
    e = store_of(app).audit.recent(1)[0]
    return e.event, e.outcome, e.reason_code, e.customer


def bound_then_unbound(app: Flask, env: Env) -> tuple[dict[str, str], dict[str, str]]:
    """The honest history every attack starts from: bound to account A, then unbound from it."""
    bind_a, unbind_a = notice("A"), notice("A", action=1)
    jump(app, env)
    assert post(app, bind_a) == (303, LANDING + "?result=bound")
    assert state(app) == (True, "dom-A")
    assert post(app, unbind_a) == (303, LANDING + "?result=unbound")
    assert state(app) == (False, "dom-A")
    assert webhooks(app) == [(True, "dom-A"), (False, "dom-A")]
    return bind_a, unbind_a


def test_honest_first_login_bind_and_a_browser_repost(app: Flask, env: Env) -> None:
    jump(app, env)
    form = notice("A")
    assert post(app, form) == (303, LANDING + "?result=bound")
    assert state(app) == (True, "dom-A") and webhooks(app) == [(True, "dom-A")]
    assert last_event(app) == ("binding", "ok", "bind", USER)
    assert post(app, form) == (303, LANDING + "?result=bound")  # back button / refresh: same page, nothing new
    assert webhooks(app) == [(True, "dom-A")] and last_event(app) == ("binding", "refused", "bind_replayed", USER)


def test_old_bind_replayed_after_unbind_changes_nothing(app: Flask, env: Env) -> None:
    bind_a, _ = bound_then_unbound(app, env)
    assert post(app, bind_a) == (303, LANDING + "?result=bound")  # the normal landing page
    assert state(app) == (False, "dom-A")  # before the fix: bound to A again
    assert webhooks(app) == [(True, "dom-A"), (False, "dom-A")]  # no webhook queued
    event = store_of(app).audit.recent(1)[0]
    assert (event.event, event.outcome, event.reason_code) == ("binding", "refused", "bind_replayed")
    assert event.detail and event.detail["changed"] is False and len(event.detail["digest"]) == 64


def test_old_bind_replayed_during_a_new_first_login_jump_changes_nothing(app: Flask, env: Env) -> None:
    """The pending jump alone would let it in: the remembered digest refuses it, and the jump stays for B."""
    bind_a, _ = bound_then_unbound(app, env)
    jump(app, env)  # the customer starts binding again
    assert post(app, bind_a) == (303, LANDING + "?result=bound")
    assert state(app) == (False, "dom-A") and last_event(app)[2] == "bind_replayed"
    assert post(app, notice("B")) == (303, LANDING + "?result=bound")  # Huawei's fresh notice still goes in
    assert state(app) == (True, "dom-B")
    assert webhooks(app) == [(True, "dom-A"), (False, "dom-A"), (True, "dom-B")]


def test_old_unbind_replayed_after_rebind_to_another_account_changes_nothing(app: Flask, env: Env) -> None:
    _, unbind_a = bound_then_unbound(app, env)
    jump(app, env)
    assert post(app, notice("B")) == (303, LANDING + "?result=bound")
    assert post(app, unbind_a) == (303, LANDING + "?result=unbound")  # the normal landing page
    assert state(app) == (True, "dom-B")  # before the fix: unbound
    assert webhooks(app) == [(True, "dom-A"), (False, "dom-A"), (True, "dom-B")]
    assert last_event(app) == ("binding", "refused", "unbind_replayed", USER)


def test_old_unbind_replayed_when_the_same_account_is_bound_again_by_import(app: Flask, env: Env) -> None:
    """domainId is current again (the platform imported the binding): only the remembered digest refuses it."""
    _, unbind_a = bound_then_unbound(app, env)
    store_of(app).bindings.apply(x_user_id=USER, bound=True, domain_id="dom-A", domain_name="hw_A",
                                bind_action="0", source="import", now=dt.datetime.now(dt.UTC), notify=False)
    assert post(app, unbind_a)[0] == 303
    assert state(app) == (True, "dom-A") and last_event(app)[2] == "unbind_replayed"


def test_bind_without_a_first_login_jump_is_refused(app: Flask, env: Env) -> None:
    status, location = post(app, notice("A"))  # never sent to Huawei by the bridge
    assert (status, location) == (409, "")
    assert state(app) is None and webhooks(app) == []
    assert last_event(app)[:3] == ("rejection", "refused", "bind_unsolicited")
    jump(app, env, "someone-else")  # another customer's jump allows nothing for this one
    assert post(app, notice("A"))[0] == 409 and state(app) is None


def test_one_bind_per_first_login_jump(app: Flask, env: Env) -> None:
    jump(app, env)
    assert post(app, notice("A"))[0] == 303
    assert post(app, notice("B"))[0] == 409  # a second, different bind needs a new jump
    assert state(app) == (True, "dom-A") and webhooks(app) == [(True, "dom-A")]
    many = [app.test_client() for _ in range(5)]
    for client in many:  # jumps while unbound collapse into one pending row per customer (bounded)
        client.get("/go", query_string={"token": mint(env, "cust-x"), "service": SERVICE})
    assert post(app, notice("X1", user="cust-x"))[0] == 303
    assert post(app, notice("X2", user="cust-x"))[0] == 409


def test_bind_after_the_window_is_refused_and_the_jump_purged(app: Flask, env: Env) -> None:
    b = bridge_of(app)
    jump(app, env)
    window = dt.timedelta(seconds=env.config.platform.bind_window_seconds)
    late = dt.datetime.now(dt.UTC) + window + dt.timedelta(seconds=5)
    with pytest.raises(BindingError) as info:
        accept_bind_notification(b, notice("A"), now=late)
    assert (info.value.code, info.value.status) == ("bind_unsolicited", 409)
    assert state(app) is None
    assert store_of(app).bind_guard.pending_jump(USER, now=dt.datetime.now(dt.UTC)) is not None
    assert store_of(app).purge_expired(late)["binding_jumps"] == 1
    assert store_of(app).bind_guard.pending_jump(USER, now=dt.datetime.now(dt.UTC)) is None
    with pytest.raises(BindingError):
        accept_bind_notification(b, notice("A"))  # purged: no jump left


def test_unbind_naming_another_account_is_refused(app: Flask, env: Env) -> None:
    jump(app, env)
    assert post(app, notice("B"))[0] == 303
    assert post(app, notice("A", action=1))[0] == 409  # a fresh unbind, but of an account not bound now
    assert state(app) == (True, "dom-B") and last_event(app)[2] == "unbind_not_current"
    assert post(app, notice("B", action=1))[0] == 303  # the honest unbind
    assert state(app) == (False, "dom-B")
    assert post(app, notice("Z", action=1, user="never-bound"))[0] == 409
    assert state(app, "never-bound") is None


def test_the_same_fresh_notice_racing_itself_applies_once(app: Flask, env: Env) -> None:
    jump(app, env)
    form = notice("A")
    results: list[int] = []
    barrier = threading.Barrier(6)

    def one() -> None:
        client = app.test_client()
        barrier.wait()
        results.append(client.post("/huawei/bind", data=form).status_code)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [303] * 6
    assert state(app) == (True, "dom-A") and webhooks(app) == [(True, "dom-A")]
    outcomes = [e.outcome for e in store_of(app).audit.recent(20) if e.event == "binding"]
    assert sorted(outcomes) == ["ok"] + ["refused"] * 5


def test_bindings_import_is_not_gated(app: Flask) -> None:
    """The operator's import (cli/bindings.py) writes state directly; a later Huawei notice is still checked."""
    changed, _ = store_of(app).bindings.apply(x_user_id=USER, bound=True, domain_id="dom-A", source="import",
                                             now=dt.datetime.now(dt.UTC), notify=False)
    assert changed and state(app) == (True, "dom-A")
    assert post(app, notice("A", action=1))[0] == 303 and state(app) == (False, "dom-A")  # names the current one


def test_the_pending_jump_is_shared_by_every_node(app: Flask, env: Env) -> None:
    """Jump on one node, Huawei's notice on another: the jump lives in the shared database, not a process."""
    store = Store.from_url(env.config.database_url, password_hasher=FAST_PASSWORD_HASHER)
    other_node = create_app(bridge=IdentityProvider(env.config, store))
    try:
        jump(app, env)
        assert other_node.test_client().post("/huawei/bind", data=notice("A")).status_code == 303
        assert state(app) == (True, "dom-A")
        assert post(app, notice("A"))[0] == 303 and last_event(app)[2] == "bind_replayed"  # replay seen on node 1
    finally:
        store.dispose()
