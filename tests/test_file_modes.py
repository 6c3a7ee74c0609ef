"""Files that hold secrets or customer data are created owner-only (0600 files, 0700 folders), whatever the
umask: the SQLite database and its WAL/SHM files (sessions, password hashes, bindings, audit), the config,
the keys; ``demo --dir`` makes its scratch folder owner-only too. (PostgreSQL keeps no files of ours.)"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from idp_bridge.cli import main
from idp_bridge.store import Store
from tests.conftest import FAST_PASSWORD_HASHER


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The permissive umask many hosts have (files 0644/0666 unless the code asks otherwise)."""
    old = os.umask(0o000)
    yield
    os.umask(old)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("IDP_BRIDGE_CONFIG", "IDP_BRIDGE_DATABASE_URL", "IDP_BRIDGE_SECRET_KEY", "IDP_BRIDGE_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_init_creates_database_owner_only(workdir: Path, open_umask: None) -> None:
    result = CliRunner().invoke(main, ["init", "--base-url", "https://sso.partner.example"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    db = workdir / "idp-bridge.db"
    assert mode(db) == 0o600
    assert mode(workdir / "idp-bridge.toml") == 0o600
    (key,) = (workdir / "certs").glob("*.key")
    assert mode(key) == 0o600
    # a user written through the store lands in the WAL first; the WAL and SHM get the database's mode
    result = CliRunner().invoke(main, ["users", "add", "cust-1"], input="a long password\n", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = Store.from_url(f"sqlite:///{db}", password_hasher=FAST_PASSWORD_HASHER)
    store.users.add("cust-2", "another password")
    extra = [p for p in (workdir / "idp-bridge.db-wal", workdir / "idp-bridge.db-shm") if p.exists()]
    assert extra, "WAL mode leaves a -wal file while a connection is open"
    assert all(mode(p) == 0o600 for p in extra), {p.name: oct(mode(p)) for p in extra}
    store.dispose()


def test_store_creates_a_missing_database_owner_only_and_leaves_an_existing_one(tmp_path: Path,
                                                                               open_umask: None) -> None:
    fresh = tmp_path / "fresh.db"
    Store.from_url(f"sqlite:///{fresh}").dispose()
    assert mode(fresh) == 0o600
    existing = tmp_path / "existing.db"
    existing.touch(mode=0o640)
    Store.from_url(f"sqlite:///{existing}").dispose()
    assert mode(existing) == 0o640  # the operator's choice is not changed behind their back


def test_demo_scratch_folder_and_database_owner_only(tmp_path: Path, open_umask: None) -> None:
    from idp_bridge.devtools.demo import prepare_demo

    setup = prepare_demo(tmp_path / "demo", port=18000, simulator_port=18001, platform_port=18002)
    assert mode(setup.workdir) == 0o700
    assert mode(setup.workdir / "idp-bridge.toml") == 0o600  # holds the hand-off, webhook and console secrets
    assert mode(setup.workdir / "idp-bridge.db") == 0o600  # demo users' password hashes
    (key,) = setup.config.key_dir.glob("*.key")
    assert mode(key) == 0o600
