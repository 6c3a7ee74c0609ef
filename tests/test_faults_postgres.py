"""PostgreSQL down and back, against gunicorn with two workers: a server of its own (initdb + pg_ctl on a
free port in a temp dir, run as the ``postgres`` user) is stopped under the bridge and started again.
While it is down every sign-in is a 503 fault page; once it is back sign-ins work within seconds,
without a restart, no worker crashed, and the outage's audit events are stored exactly once."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import Gunicorn, Tally, fault_env, new_port, store_unavailable_events
from tests.test_faults_sqlite import RECOVERY_S, settle

pytestmark = pytest.mark.slow


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"no {name} under /usr/lib/postgresql/*/bin: install postgresql")
    return found[-1]


class PgServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pgdata"
        self.port = new_port()
        self.user = pwd.getpwnam("postgres")
        root.mkdir(parents=True, exist_ok=True)
        os.chown(root, self.user.pw_uid, self.user.pw_gid)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        def as_postgres() -> None:
            os.setgid(self.user.pw_gid)
            os.setuid(self.user.pw_uid)

        result = subprocess.run(list(args), capture_output=True, text=True, preexec_fn=as_postgres, cwd=self.root,
                                timeout=60, check=False)
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, args, result.stdout, result.stderr + "\n"
                                                + (self.root / "pg.log").read_text(errors="replace")
                                                if (self.root / "pg.log").exists() else result.stderr)

    def start(self) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"), "-w", "-t", "30",
                  "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")


@pytest.fixture
def pg() -> Iterator[PgServer]:
    # not under pytest's tmp_path: the postgres user must be able to reach the directory
    server = PgServer(Path(tempfile.mkdtemp(prefix="idpb-faults-pg-")))
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def test_postgresql_down_then_back(tmp_path: Path, pg: PgServer) -> None:
    port = new_port()
    env = fault_env(tmp_path / "bridge", pg.url, port=port)
    tally = Tally()
    with Gunicorn(env, port) as bridge:
        for _ in range(2):
            assert tally.sign_in(bridge.base) == "ok"
        pg.stop()
        try:
            during = [tally.sign_in(bridge.base) for _ in range(6)]
            assert during == ["503"] * 6, (during, tally.other)
        finally:
            pg.start()
        took = tally.until_ok(bridge.base, timeout=RECOVERY_S)
        settle(tally, bridge, pg.url)
    assert took < RECOVERY_S
    assert store_unavailable_events(pg.url)[0] == tally.counts["503"]
