"""The SP registry under concurrency: a worker's first requests, arriving together on several threads, all find
their SP (a scan in progress used to make the others answer unknown_issuer with "known entity IDs: none")."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from idp_bridge.errors import ANY_ERROR
from idp_bridge.idp.service_providers import LoadedServiceProvider, ServiceProviderRegistry
from tests.huawei_fixtures import HUAWEI_ENTITY_ID
from tests.journey import make_env


class SlowRegistry(ServiceProviderRegistry):
    """Loading metadata takes a while, as a file on a busy disk or a URL does."""

    def get(self, name: str) -> LoadedServiceProvider:
        time.sleep(0.05)
        return super().get(name)


def test_threads_arriving_together_on_a_fresh_registry_all_find_the_sp(tmp_path: Path) -> None:
    env = make_env(tmp_path / "bridge", f"sqlite:///{tmp_path / 'db.sqlite'}")
    registry = SlowRegistry(env.config)
    start = threading.Barrier(8)
    found: list[str] = []
    refused: list[str] = []

    def look_up() -> None:
        start.wait()
        try:
            found.append(registry.by_entity_id(HUAWEI_ENTITY_ID).name)
        except ANY_ERROR as exc:
            refused.append(exc.operator)

    threads = [threading.Thread(target=look_up) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert refused == [] and len(found) == 8


def test_an_unknown_issuer_is_refused_and_names_the_known_ones(tmp_path: Path) -> None:
    env = make_env(tmp_path / "bridge", f"sqlite:///{tmp_path / 'db.sqlite'}")
    registry = ServiceProviderRegistry(env.config)
    try:
        registry.by_entity_id("https://evil.example/")
    except ANY_ERROR as exc:
        assert exc.code == "unknown_issuer" and HUAWEI_ENTITY_ID in exc.operator
    else:
        raise AssertionError("an unknown issuer was accepted")
