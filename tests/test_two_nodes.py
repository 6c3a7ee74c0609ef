"""Two bridge processes on different ports sharing one database (PostgreSQL, and a shared SQLite file):
a one-time value used on one is refused on the other, and racing the same one at both wins exactly once.

The PostgreSQL case always runs against 127.0.0.1:5432 (or IDP_BRIDGE_TEST_DATABASE_URL): when the
server cannot be reached the test fails, it does not skip.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import make_url, text

from idp_bridge.store import Store
from tests.conftest import configured_database_url
from tests.journey import Env
from tests.platform_env import mint, platform_env
from tests.servers import ServerProcess, free_port, idp_bridge_cmd, wait_http

pytestmark = pytest.mark.slow

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROUNDS = 15
SERVICE = "https://console.huaweicloud.com/"


@pytest.fixture(params=["postgresql", "sqlite"])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
        store = Store.from_url(url)
        store.upgrade()
        store.dispose()
        yield url
        return
    server = configured_database_url() or PG_URL
    admin = Store.from_url(server)  # StoreUnavailableError: the test fails, never skips
    schema = f"idpb_two_nodes_{uuid.uuid4().hex[:10]}"
    with admin.engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)
    store = Store.from_url(url)
    store.upgrade()
    store.dispose()
    try:
        yield url
    finally:
        with admin.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def two_nodes(tmp_path: Path, shared_db: str) -> Iterator[tuple[Env, str, str]]:
    port_a, port_b = free_port(), free_port()
    # one public base URL (behind a load balancer), two processes serving it
    env = platform_env(tmp_path / "bridge", shared_db, base_url=f"http://127.0.0.1:{port_a}")
    cfg = str(env.config.path)
    with ServerProcess(idp_bridge_cmd("--config", cfg, "serve", "--port", str(port_a))) as a, \
            ServerProcess(idp_bridge_cmd("--config", cfg, "serve", "--port", str(port_b))) as b:
        wait_http(f"http://127.0.0.1:{port_a}/healthz", proc=a.proc)
        wait_http(f"http://127.0.0.1:{port_b}/healthz", proc=b.proc)
        yield env, f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"


def sso(base: str, query: str) -> int:
    return requests.get(base + "/saml/sso?" + query, allow_redirects=False, timeout=20).status_code


def go(base: str, token: str) -> int:
    resp = requests.get(base + "/go", params={"token": token, "service": SERVICE}, allow_redirects=False, timeout=20)
    if resp.status_code == 302:
        assert resp.headers["Location"].startswith("https://auth.huaweicloud.com/authui/saml/login?")
    return resp.status_code


def race(call: object, a: str, b: str, value: str) -> list[int]:
    barrier = threading.Barrier(2)
    out: list[int] = []

    def one(base: str) -> None:
        barrier.wait(10)
        out.append(call(base, value))  # type: ignore[operator]

    threads = [threading.Thread(target=one, args=(base,)) for base in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sorted(out)


def test_used_on_one_refused_on_the_other(two_nodes: tuple[Env, str, str]) -> None:
    env, a, b = two_nodes
    query = env.redirect_query(env.authn_request(request_id="_two-nodes-" + uuid.uuid4().hex))
    assert sso(a, query) == 302
    assert sso(b, query) == 400 and sso(a, query) == 400
    token = mint(env)
    assert go(b, token) == 302
    assert go(a, token) == 400 and go(b, token) == 400
    assert refusal_reasons(env) == {"request_replayed": 2, "handoff_replayed": 2}


def test_racing_both_nodes_wins_exactly_once(two_nodes: tuple[Env, str, str]) -> None:
    env, a, b = two_nodes
    for i in range(ROUNDS):
        query = env.redirect_query(env.authn_request(request_id=f"_race-{i}-{uuid.uuid4().hex}"))
        assert race(sso, a, b, query) == [302, 400], f"AuthnRequest round {i}"
        assert race(go, a, b, mint(env)) == [302, 400], f"hand-off round {i}"
    # every loser was refused as a replay, not for some other reason
    assert refusal_reasons(env) == {"request_replayed": ROUNDS, "handoff_replayed": ROUNDS}


def refusal_reasons(env: Env) -> dict[str, int]:
    store = Store.from_url(env.config.database_url)
    try:
        reasons: dict[str, int] = {}
        for event in store.audit.recent(limit=10_000):
            if event.event == "rejection":
                reasons[event.reason_code or "?"] = reasons.get(event.reason_code or "?", 0) + 1
        return reasons
    finally:
        store.dispose()
