"""Login rate through a key rotation: gunicorn (2 workers), complete SSO logins from several threads.

Run:  .venv/bin/python bench/bench_rotation.py [--seconds N] [--threads T] [--workers W]

The same load as tests/test_rotation_load.py (which asserts zero failed logins and enough logins per step,
never a rate): signed AuthnRequest -> sign-in every tenth login -> our Response, checked (signature included)
against the metadata the test SP holds. Phases: ``steady`` (N s), ``rotating`` (keys new, confirm-published,
activate, retire: the CLI, as an operator runs it; workers pick the changes up in the background) and
``after`` (N s). Prints logins/s and failures per phase. Everything lives in a temporary directory (SQLite
database, generated keys) removed at exit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from idp_bridge.config import read_raw_config, write_raw_config  # noqa: E402
from idp_bridge.store import Store  # noqa: E402
from tests.conftest import FAST_PASSWORD_HASHER  # noqa: E402
from tests.journey import PASSWORD, make_env  # noqa: E402
from tests.servers import ServerProcess, free_port, gunicorn_cmd, wait_http  # noqa: E402
from tests.test_rotation_load import Load, RefreshingSp, keys_cmd, new_key  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the steady and after phases")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = make_env(Path(tmp) / "bridge", db_url, base_url=base)
        assert env.config.path is not None
        raw = read_raw_config(env.config.path)
        raw["keys"] = {"publish_lead_seconds": 1, "retiring_grace_seconds": 1, "reload_seconds": 0.5}
        raw["sp"][0]["metadata_fetchers"] = ["127.0.0.1/32"]
        write_raw_config(env.config.path, raw)
        store = Store.from_url(db_url, password_hasher=FAST_PASSWORD_HASHER)
        store.upgrade()
        store.users.add("cust-1001", PASSWORD, email="c1001@partner.example")
        first = next(env.config.key_dir.glob("*.key")).stem
        with ServerProcess(gunicorn_cmd(port, workers=args.workers),
                           env={"IDP_BRIDGE_CONFIG": str(env.config.path)}) as server:
            wait_http(base + "/healthz", proc=server.proc)
            drain = threading.Thread(target=lambda: server.proc.stdout.read(), daemon=True)  # type: ignore[union-attr]
            drain.start()
            sp = RefreshingSp(base, (0.2, 1.2))
            load = Load(env, base, sp)
            load.phase = "steady"
            threads = [threading.Thread(target=sp.run, daemon=True)]
            threads += [threading.Thread(target=load.run, args=(i,), daemon=True) for i in range(args.threads)]
            spans: dict[str, float] = {}
            for t in threads:
                t.start()
            try:
                t0 = time.monotonic()
                time.sleep(args.seconds)
                spans["steady"] = time.monotonic() - t0
                load.phase = "rotating"
                t0 = time.monotonic()
                second = new_key(env)
                keys_cmd(env, "confirm-published", second, "--sp", "huawei-cn", "--note", "bench")
                time.sleep(1.5)
                keys_cmd(env, "activate", second)
                time.sleep(1.5)
                keys_cmd(env, "retire", first)
                spans["rotating"] = time.monotonic() - t0
                load.phase = "after"
                t0 = time.monotonic()
                time.sleep(args.seconds)
                spans["after"] = time.monotonic() - t0
            finally:
                load.stop.set()
                sp.stop.set()
                for t in threads:
                    t.join(timeout=15)
        store.dispose()
    print(f"{'phase':<10} {'seconds':>8} {'logins':>7} {'per s':>7} {'failed':>7}")
    for phase, seconds in spans.items():
        ok = load.ok[phase]
        print(f"{phase:<10} {seconds:>8.1f} {ok:>7} {ok / seconds:>7.1f} {load.failed[phase]:>7}")
    for failure in load.failures[:5]:
        print("failure:", failure)


if __name__ == "__main__":
    main()
