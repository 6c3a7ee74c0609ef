"""Expired rows are purged: by `idp-bridge db purge` and by the loop every web process runs."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import func, select

from idp_bridge.cli import main
from idp_bridge.ops.housekeeping import purge_loop
from idp_bridge.store import Store
from idp_bridge.store.tables import ReplayId, SessionRow
from tests.journey import make_env


def _counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(ReplayId)).scalar_one(),
                conn.execute(select(func.count()).select_from(SessionRow)).scalar_one())


def _seed(store: Store) -> None:
    now = dt.datetime.now(dt.UTC)
    store.replay.claim("authn_request", "_old", issuer="sp", expires_at=now - dt.timedelta(minutes=1),
                     now=now - dt.timedelta(minutes=10))
    store.replay.claim("authn_request", "_live", issuer="sp", expires_at=now + dt.timedelta(minutes=10), now=now)
    store.sessions.create({"a": 1}, user_id=None, now=now - dt.timedelta(hours=2), ttl=dt.timedelta(hours=1))
    store.sessions.create({"b": 2}, user_id=None, now=now, ttl=dt.timedelta(hours=1))
    assert _counts(store) == (2, 2)


def test_db_purge_command(tmp_path: Path, store: Store, db_url: str) -> None:
    env = make_env(tmp_path / "bridge", db_url)
    _seed(store)
    result = CliRunner().invoke(main, ["--config", str(env.config.path), "db", "purge"])
    assert result.exit_code == 0, result.output
    assert "replay_ids 1" in result.output and "sessions 1" in result.output
    assert _counts(store) == (1, 1)  # the live ones stay


def test_purge_loop_runs_by_itself(store: Store) -> None:
    _seed(store)
    loop = purge_loop(store, interval=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while _counts(store) != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    assert _counts(store) == (1, 1)
