"""The SP registry under concurrency: a worker's first requests, arriving together on several threads, all find
their SP (a scan in progress used to make the others answer unknown_issuer with "known entity IDs: none")."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from idp_bridge.errors import ANY_ERROR
from idp_bridge.idp.service_providers import LoadedServiceProvider, ServiceProviderRegistry
from idp_bridge.saml.metadata import build_sp_metadata
from tests.huawei_fixtures import HUAWEI_ENTITY_ID
from tests.journey import SP_ACS, SP_ENTITY_ID, make_env
from tests.pki import cached_key


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


def test_a_changed_metadata_file_is_seen_after_stat_seconds_and_not_looked_at_before(tmp_path: Path) -> None:
    """Cheap change detection: within ``stat_seconds`` the loaded copy is used without a look at the file;
    after it, a new file (even one of the same size and modification time, put in place by rename) is loaded."""
    env = make_env(tmp_path / "bridge", f"sqlite:///{tmp_path / 'db.sqlite'}")
    sp = env.config.service_providers[0]
    path = Path(sp.metadata)
    xml = build_sp_metadata(entity_id=SP_ENTITY_ID, acs_url=SP_ACS, certificate=cached_key("other-sp").certificate)
    current = path.read_bytes()
    assert xml != current
    size = max(len(xml), len(current))  # whitespace after the root element: both files of one size
    path.write_bytes(current.ljust(size, b"\n"))
    replacement = tmp_path / "replacement.xml"
    replacement.write_bytes(xml.ljust(size, b"\n"))

    registry = ServiceProviderRegistry(env.config, stat_seconds=0.5)
    before = registry.get(sp.name).metadata
    old = path.stat()
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))
    replacement.replace(path)
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (old.st_mtime_ns, old.st_size)
    assert registry.get(sp.name).metadata is before  # inside stat_seconds: not looked at
    time.sleep(0.6)
    after = registry.get(sp.name).metadata
    assert {c.fingerprint(hashes.SHA256()) for c in after.signing_certificates} == {
        cached_key("other-sp").certificate.fingerprint(hashes.SHA256())}
