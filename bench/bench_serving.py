"""Server settings side by side: one bridge deployment served by several gunicorns, SSO rounds interleaved.

Run:  .venv/bin/python bench/bench_serving.py [--db sqlite|pg] [--rounds R] [--seconds N] [SETTING ...]
      a SETTING is ``LABEL:WORKERS:THREADS`` (default: 4 workers with 16, 4, 2 and 1 threads)

``bench_http.py`` compares contenders under one server setting; this compares settings for one contender,
the full SSO round trip, so that a difference of a few per cent is not lost in the noise of a shared machine
(every setting runs in every round, one after the other). Each gunicorn runs the shipped config
(``gunicorn -c python:idp_bridge.deploy.gunicorn_conf``) with its own ``-w`` and ``IDP_BRIDGE_THREADS``,
pinned to the server CPU, all serving the same deployment and database; wrk, the lines, the CPU accounting and
the python3-saml judging are bench_http's. Printed per setting: CPU per SSO (least and median round, and
the least ÷ the raw signature of the same key), median p50 and p99, median req/s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

import bench_http as bh
import http_judge
import http_setup

DEFAULT_SETTINGS = ["t16:4:16", "t4:4:4", "t2:4:2", "t1:4:1"]


def parse_setting(text: str) -> tuple[str, int, int]:
    label, workers, threads = text.split(":")
    return label, int(workers), int(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", default=DEFAULT_SETTINGS, help="LABEL:WORKERS:THREADS ...")
    parser.add_argument("--db", choices=["sqlite", "pg"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--samples", type=int, default=5, help="Responses judged per run")
    parser.add_argument("--pg-url", default=bh.DEFAULT_PG)
    args = parser.parse_args()
    settings = [parse_setting(s) for s in args.settings]
    wrk_args = argparse.Namespace(client_cpu="1", server_cpus="0", threads=2, connections=args.connections,
                                  seconds=args.seconds, close=False, samples=args.samples)
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    schema = "bench_serving"
    admin = None
    if args.db == "pg":
        from sqlalchemy import create_engine
        admin = create_engine(args.pg_url)
        url = bh.pg_url_for(args.pg_url, schema, admin)
    else:
        url = f"sqlite:///{work / 'bridge' / 'bridge.db'}"
    sp_key = http_setup.SpKey.generate()
    dep = http_setup.make_deployment("bridge", work / "bridge", port=bh.free_port(), db_url=url, n_sps=1,
                                     algorithm="init", sp_key=sp_key, sessions=1000)
    pg = bh.PgBackends(args.pg_url) if args.db == "pg" else None
    raw = bh.Contender("raw signature", "raw", raw_key=dep.key_files()[0])
    servers: list[bh.Server] = []
    contenders: list[bh.Contender] = []
    try:
        for label, workers, threads in settings:
            # The first gunicorn listens on the deployment's own port: the judge fetches /saml/metadata there.
            port = dep.port if not servers else bh.free_port()
            server = bh.Server(label, port, "idp_bridge.web:create_app()",
                               {**dep.env, "IDP_BRIDGE_THREADS": str(threads)}, work / f"{label}.log",
                               pg_app_name=schema if pg else None)
            server.start(workers=workers, cpus=wrk_args.server_cpus, config="prod")
            server.wait_ready("/healthz")
            servers.append(server)
            contenders.append(bh.sso_contender(f"{label} (-w {workers}, {threads} threads)", dep, server, sp_key))
        wrk_args.seconds = 2.0
        for c in contenders:  # warm-up
            bh.run_wrk(c, wrk_args, work, pg)
            c.verdicts = http_judge.Verdicts()
        wrk_args.seconds = args.seconds
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            raw.results.append(bh.run_raw(raw, wrk_args))
            for c in contenders:
                c.results.append(bh.run_wrk(c, wrk_args, work, pg))
        report(raw, contenders, args)
    finally:
        for s in servers:
            s.stop()
        if admin is not None:
            from sqlalchemy import text
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()
        shutil.rmtree(work, ignore_errors=True)


def report(raw: bh.Contender, contenders: list[bh.Contender], args: argparse.Namespace) -> None:
    raw_ms = min(r.web_cpu_ms for r in raw.results)
    print(f"\n{args.db}, {args.connections} connections, servers on CPU 0, {args.rounds} x {args.seconds:g} s "
          f"interleaved; raw signature {raw_ms:.3f} ms (least round)")
    print(f"{'setting':34} {'CPU least':>9} {'median':>7} {'/ raw':>6} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} "
          f"{'bad':>4} {'judged ok':>10}")
    for c in contenders:
        cpu = [r.web_cpu_ms + r.db_cpu_ms for r in c.results]
        print(f"{c.label:34} {min(cpu):9.3f} {statistics.median(cpu):7.3f} {min(cpu) / raw_ms:6.2f} "
              f"{statistics.median(r.p50_ms for r in c.results):7.2f} "
              f"{statistics.median(r.p99_ms for r in c.results):7.2f} "
              f"{statistics.median(r.rps for r in c.results):7.1f} {sum(r.bad for r in c.results):4d} "
              f"{c.verdicts.ok:>4}/{c.verdicts.judged:<5}")
        print(f"  rounds: CPU {' '.join(f'{x:.3f}' for x in cpu)}; p99 "
              f"{' '.join(f'{r.p99_ms:.1f}' for r in c.results)}")


if __name__ == "__main__":
    main()
