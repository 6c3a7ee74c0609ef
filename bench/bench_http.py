"""HTTP benchmark: the whole SSO round trip under gunicorn, beside hello-world, raw RSA and pysaml2.

Run:  .venv/bin/python bench/bench_http.py [--seconds N] [--rounds R] [--quick]   (see bench/README.md)

Every server runs under the README's production command (``gunicorn -c python:idp_bridge.deploy.gunicorn_conf
-w 4``: gthread workers, keep-alive; ``--server-config sync`` for gunicorn's default workers), pinned to the
server CPU(s); the load generator is wrk (Debian's ``wrk``) pinned to another CPU, replaying
pre-generated lines (a fresh signed AuthnRequest each, cookies of many logged-in sessions) through
``rotate.lua``, which also checks every response and keeps a sample for python3-saml to judge.
Server CPU per request is read from ``/proc`` (utime+stime of the gunicorn master and workers, and
for PostgreSQL separately of the database backends serving it). Contenders are measured interleaved,
round after round, and each row shows the best round's req/s and the least CPU per request of the rounds:
busy neighbours on a shared machine add CPU time per request (caches and memory bandwidth are shared)
and never take any away, so the least round is the nearest to the idle-machine cost, for every contender
alike (the median is in the JSON).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import http_judge  # noqa: E402
import http_setup  # noqa: E402
from http_setup import Deployment, SpKey  # noqa: E402

BENCH = Path(__file__).resolve().parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/idp_perf"


# ------------------------------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_ticks(pid: int, *, children: bool = False) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # reaped children (a worker gunicorn restarted)
    return ticks


def child_pids(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


@dataclass
class Server:
    name: str
    port: int
    app: str
    env: dict[str, str]
    log: Path
    pg_app_name: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *, workers: int, cpus: str, config: str) -> None:
        # "prod": the README's production command (the shipped gunicorn config: gthread workers, keep-alive),
        # for every contender alike; "sync": gunicorn's default sync workers (a new connection per request).
        conf = ["-c", "python:idp_bridge.deploy.gunicorn_conf"] if config == "prod" else []
        cmd = ["taskset", "-c", cpus, GUNICORN, *conf, "-w", str(workers), "-b", f"127.0.0.1:{self.port}",
               "--pythonpath", str(BENCH), "--no-control-socket", self.app]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     cwd=str(self.log.parent))

    def wait_ready(self, path: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name}: gunicorn exited; its log:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5).read()  # noqa: S310
                return
            except urllib.error.HTTPError:  # it answers (pysaml2 refuses a bare GET with 400)
                return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"{self.name}: not answering {path} after {timeout} s; log:\n{self.log.read_text()[-3000:]}")

    def cpu_ticks(self, pg: Callable[[str], int] | None) -> tuple[int, int]:
        assert self.proc is not None
        # taskset execs gunicorn in place, so proc.pid is the gunicorn master.
        web = proc_ticks(self.proc.pid, children=True) + sum(proc_ticks(p, children=True) for p in child_pids(self.proc.pid))
        db = pg(self.pg_app_name) if pg and self.pg_app_name else 0
        return web, db

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class PgBackends:
    """CPU ticks of the PostgreSQL backends serving one deployment (found by application_name)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        self.engine = create_engine(url)

    def __call__(self, app_name: str) -> int:
        from sqlalchemy import text
        with self.engine.connect() as conn:
            pids = [r[0] for r in conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                                               {"a": app_name})]
        return sum(proc_ticks(p) for p in pids)


# ------------------------------------------------------------------------------------------ load
@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    web_cpu_ms: float
    db_cpu_ms: float
    requests: int
    bad: int
    first_bad: str = ""


@dataclass
class Contender:
    label: str
    kind: str  # "http" or "raw"
    server: Server | None = None
    lines: Callable[[int], list[str]] | None = None  # count -> "PATH\tCOOKIE" lines
    expect: str = ""
    judge: Callable[[list[str]], http_judge.Verdicts] | None = None
    raw_key: Path | None = None
    results: list[Result] = field(default_factory=list)
    verdicts: http_judge.Verdicts = field(default_factory=http_judge.Verdicts)
    rate_guess: float = 600.0
    #: every line may be answered once (signed AuthnRequests): running out of lines spoils the run
    one_shot: bool = False


def run_wrk(c: Contender, args: argparse.Namespace, work: Path, pg: PgBackends | None) -> Result:
    """One wrk run; a one-shot contender that ran out of fresh lines (its rate guess came from a slow warm-up,
    e.g. the first requests loading 1000 SPs' metadata) is run again with more lines, at most twice."""
    for _attempt in range(2):
        res = _run_wrk_once(c, args, work, pg)
        if not (c.one_shot and res.first_bad == RAN_OUT):
            return res
        c.rate_guess *= 4
    return _run_wrk_once(c, args, work, pg)


RAN_OUT = "ran out of fresh URLs"


def _run_wrk_once(c: Contender, args: argparse.Namespace, work: Path, pg: PgBackends | None) -> Result:
    assert c.server is not None and c.lines is not None
    count = int(c.rate_guess * args.seconds * 2.5) + 200
    lines_file = work / "lines.txt"
    lines_file.write_text("\n".join(c.lines(count)) + "\n")
    prefix = work / f"sample-{c.label.replace(' ', '_').replace('/', '_')}-"
    sample_every = max(1, int(c.rate_guess * args.seconds / max(1, args.samples))) if c.judge else 0
    for old in work.glob(prefix.name + "*"):
        old.unlink()
    cmd = ["taskset", "-c", args.client_cpu, "wrk", "-t", str(args.threads), "-c", str(args.connections),
           "-d", f"{max(1, round(args.seconds))}s", "--timeout", "10s", "-s", str(BENCH / "rotate.lua"),
           f"http://127.0.0.1:{c.server.port}", "--", str(lines_file), str(args.threads), c.expect,
           str(sample_every), str(prefix), "close" if args.close else "keep-alive"]
    before = c.server.cpu_ticks(pg)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    after = c.server.cpu_ticks(pg)
    if os.environ.get("BENCH_DEBUG"):
        print(out.stdout, out.stderr, file=sys.stderr)
    summary = next((json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"requests"')), None)
    if summary is None:
        raise SystemExit(f"wrk failed for {c.label}:\n{out.stdout}\n{out.stderr}")
    n = max(1, summary["requests"])
    res = Result(rps=summary["requests"] / (summary["duration_us"] / 1e6), p50_ms=summary["p50_us"] / 1000,
                 p99_ms=summary["p99_us"] / 1000, web_cpu_ms=(after[0] - before[0]) * 1000 / CLK_TCK / n,
                 db_cpu_ms=(after[1] - before[1]) * 1000 / CLK_TCK / n, requests=summary["requests"],
                 bad=summary["bad"] + summary["socket_errors"] + (n if summary["wrapped"] and c.one_shot else 0),
                 first_bad=RAN_OUT if summary["wrapped"] and c.one_shot else summary["first_bad"])
    c.rate_guess = max(res.rps, c.rate_guess if res.first_bad == RAN_OUT else 20.0)
    if c.judge:
        bodies = [b for f in sorted(work.glob(prefix.name + "*")) for b in f.read_text().splitlines() if b]
        v = c.judge(bodies[: args.samples])
        c.verdicts.judged += v.judged
        c.verdicts.ok += v.ok
        c.verdicts.errors += v.errors[: 5 - len(c.verdicts.errors)]
    return res


def run_raw(c: Contender, args: argparse.Namespace) -> Result:
    assert c.raw_key is not None
    cmd = ["taskset", "-c", args.server_cpus.split(",")[0], sys.executable, __file__, "--raw-sign", str(c.raw_key),
           "--seconds", str(args.seconds)]
    data = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return Result(rps=data["per_s"], p50_ms=0.0, p99_ms=0.0, web_cpu_ms=data["cpu_ms"], db_cpu_ms=0.0,
                  requests=data["n"], bad=0)


def raw_sign(key_path: Path, seconds: float) -> None:
    """Child process: sign ~1 KB with the key, PKCS#1 v1.5 / ECDSA with SHA-256, for ``seconds``."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    data = os.urandom(1000)
    if isinstance(key, rsa.RSAPrivateKey):
        def sign() -> bytes:
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        def sign() -> bytes:
            return key.sign(data, ec.ECDSA(hashes.SHA256()))
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            sign()
        n += 20
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"n": n, "per_s": n / wall, "cpu_ms": cpu * 1000 / n}))


# ------------------------------------------------------------------------------------------ setup
def pg_url_for(base: str, schema: str, admin: Any) -> str:
    from sqlalchemy import make_url, text
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}", "application_name": schema})
    return url.render_as_string(hide_password=False)


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, str, int]]:
    """(name, db, SPs, algorithm, filler rows) of every bridge deployment to measure."""
    out = [(f"{db}-{n}sp", db, n, "init", 0) for db in args.dbs for n in args.sps]
    if args.fill:
        out += [(f"{db}-1sp-filled", db, 1, "init", args.fill) for db in args.dbs]
    out += [(f"sqlite-1sp-{alg}", "sqlite", 1, alg, 0) for alg in args.algorithms]
    return out


def build(args: argparse.Namespace, work: Path) -> tuple[list[Contender], list[Server], Any]:
    sp_key = SpKey.generate()
    admin = None
    if "pg" in args.dbs:
        from sqlalchemy import create_engine
        admin = create_engine(args.pg_url)
    servers: list[Server] = []
    contenders: list[Contender] = []
    raw_keys: dict[str, Path] = {}
    first: dict[str, Deployment] = {}
    for name, db, n_sps, alg, fill_rows in plan(args):
        t0 = time.monotonic()
        schema = f"bench_{name.replace('-', '_')}"
        url = pg_url_for(args.pg_url, schema, admin) if db == "pg" else f"sqlite:///{work / name / 'bridge.db'}"
        dep = http_setup.make_deployment(name, work / name, port=free_port(), db_url=url, n_sps=n_sps,
                                         algorithm=alg, sp_key=sp_key, sessions=args.sessions)
        if fill_rows:
            http_setup.fill(url, fill_rows)
        print(f"  set up {name}: {n_sps} SPs, {db}, key {alg}{f', {fill_rows} filler rows' if fill_rows else ''} "
              f"({time.monotonic() - t0:.1f} s)", flush=True)
        server = Server(name, dep.port, "idp_bridge.web:create_app()", dep.env, work / f"{name}.log",
                        pg_app_name=schema if db == "pg" else None)
        servers.append(server)
        key_file, cert_file = dep.key_files()
        raw_keys.setdefault(alg, key_file)
        first.setdefault(db, dep)
        label = f"SSO {db} {n_sps} SP" + (" +filled" if fill_rows else "") + (f" {alg}" if alg != "init" else "")
        contenders.append(sso_contender(label, dep, server, sp_key))
        if n_sps == 1 and not fill_rows and alg == "init":
            contenders.append(Contender(f"/saml/metadata {db}", "http", server, lambda k: ["/saml/metadata\t"] * k,
                                        expect="EntityDescriptor"))
            contenders.append(Contender(f"/healthz {db}", "http", server, lambda k: ["/healthz\t"] * k,
                                        expect='"status"'))
    hello = Server("hello", free_port(), "http_apps:hello()", dict(os.environ), work / "hello.log")
    servers.append(hello)
    contenders.insert(0, Contender("Flask hello-world", "http", hello, lambda k: ["/\t"] * k, expect="Hello"))
    for alg, key in raw_keys.items():
        contenders.insert(1, Contender(f"raw signature, {alg} key", "raw", raw_key=key))
    if not args.no_pysaml2:
        dep = next(iter(first.values()))
        key_file, cert_file = dep.key_files()
        pyd = work / "pysaml2"
        http_setup.write_pysaml2_dir(pyd, key_file=key_file, cert_file=cert_file, sp_key=sp_key,
                                     sessions=args.sessions)
        port = free_port()
        sso = f"http://127.0.0.1:{port}/saml/sso"
        py = Server("pysaml2", port, "http_apps:pysaml2_idp()",
                    {**os.environ, "BENCH_PYSAML2_DIR": str(pyd), "BENCH_PYSAML2_SSO": sso}, work / "pysaml2.log")
        servers.append(py)
        cookies = [f"idpb_session=py{i:06d}" for i in range(args.sessions)]
        contenders.append(Contender("pysaml2 IdP (xmlsec1), same key", "http", py, lambda k: http_setup.signed_paths(
            sso_url=sso, issuer=http_setup.sp_entity_id(0), acs_url=http_setup.sp_acs(0), sp_key=sp_key,
            cookies=cookies, count=k)[0], expect="SAMLResponse", rate_guess=60.0, one_shot=True))
    return contenders, servers, admin


def sso_contender(label: str, dep: Deployment, server: Server, sp_key: SpKey) -> Contender:
    sp = dep.requesting_sp
    cookies = [f"idpb_session={t}" for t in dep.tokens]
    issued: set[str] = set()
    metadata: list[bytes] = []

    def lines(count: int) -> list[str]:
        out, ids = http_setup.signed_paths(sso_url=dep.base_url + "/saml/sso", issuer=http_setup.sp_entity_id(sp),
                                           acs_url=http_setup.sp_acs(sp), sp_key=sp_key, cookies=cookies,
                                           count=count)
        issued.update(ids)
        return out

    def judge(bodies: list[str]) -> http_judge.Verdicts:
        if not metadata:
            metadata.append(urllib.request.urlopen(dep.base_url + "/saml/metadata", timeout=10).read())  # noqa: S310
        v = http_judge.Verdicts()
        for body in bodies:
            http_judge.judge(body, idp_metadata=metadata[0], acs_url=http_setup.sp_acs(sp),
                             sp_entity_id=http_setup.sp_entity_id(sp), request_ids=issued, verdicts=v)
        return v

    return Contender(label, "http", server, lines, expect="SAMLResponse", judge=judge, one_shot=True)


# ------------------------------------------------------------------------------------------ report
def least_round(c: Contender) -> Result:
    """The round with the least CPU per request (see the module docstring)."""
    return min(c.results, key=lambda r: r.web_cpu_ms + r.db_cpu_ms)


def least_cpu(c: Contender) -> float:
    if not c.results:
        return float("nan")
    r = least_round(c)
    return r.web_cpu_ms + r.db_cpu_ms


def median_cpu(c: Contender) -> float:
    return statistics.median(r.web_cpu_ms + r.db_cpu_ms for r in c.results) if c.results else float("nan")


def best(c: Contender) -> Result:
    return max(c.results, key=lambda r: r.rps)


def report(contenders: list[Contender], args: argparse.Namespace) -> dict[str, Any]:
    threads = f" --threads {args.server_threads}" if args.server_threads is not None else ""
    print(f"\n{args.connections} connections, {args.threads} wrk threads on CPU {args.client_cpu}, servers on CPU "
          f"{args.server_cpus} (gunicorn {'shipped config' if args.server_config == 'prod' else 'sync workers'} "
          f"-w {args.workers}{threads}{', Connection: close' if args.close else ', keep-alive'}), "
          f"{args.rounds} x {args.seconds:g} s interleaved; "
          "req/s: best round; CPU: least round's ms per request (web + PostgreSQL backends)")
    print(f"{'contender':40} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7} {'(web':>6} {'+ db)':>6} "
          f"{'bad':>5} {'judged ok':>10}")
    rows: dict[str, Any] = {}
    for c in contenders:
        if not c.results:
            continue
        b = best(c)
        bad = sum(r.bad for r in c.results)
        least = least_round(c)
        web, db = least.web_cpu_ms, least.db_cpu_ms
        judged = f"{c.verdicts.ok}/{c.verdicts.judged}" if c.judge else ""
        p = f"{b.p50_ms:7.2f} {b.p99_ms:7.2f}" if c.kind == "http" else f"{'':7} {'':7}"
        print(f"{c.label:40} {b.rps:8.1f} {p} {least_cpu(c):7.3f} {web:6.3f} {db:6.3f} {bad:5d} {judged:>10}")
        rows[c.label] = {"rps": b.rps, "p50_ms": b.p50_ms, "p99_ms": b.p99_ms, "cpu_ms": least_cpu(c),
                         "median_cpu_ms": median_cpu(c),
                         "web_cpu_ms": web, "db_cpu_ms": db, "bad": bad, "judged": c.verdicts.judged,
                         "judged_ok": c.verdicts.ok, "rounds": [r.__dict__ for r in c.results]}
        for e in c.verdicts.errors:
            print(f"    judged wrong: {e}")
        first_bad = next((r.first_bad for r in c.results if r.first_bad), "")
        if first_bad:
            print(f"    first bad response: {first_bad}")
    by = {c.label: c for c in contenders if c.results}

    def ratio(a: str, b: str, f: Callable[[Contender], float]) -> str:
        if a not in by or b not in by:
            return "n/a"
        return f"{f(by[a]) / f(by[b]):.2f}"

    raw = next((label for label in by if label.startswith("raw signature, init")), "")
    print("\nratios (same run):")
    for db in args.dbs:
        one = f"SSO {db} 1 SP"
        print(f"  {db}: SSO CPU / raw signature CPU = {ratio(one, raw, least_cpu)} (web only "
              f"{ratio(one, raw, lambda c: least_round(c).web_cpu_ms)}); "
              f"SSO req/s / pysaml2 req/s = {ratio(one, 'pysaml2 IdP (xmlsec1), same key', lambda c: best(c).rps)}")
        for n in args.sps[1:]:
            print(f"  {db}: CPU per SSO, {n} SPs / 1 SP = {ratio(f'SSO {db} {n} SP', one, least_cpu)}")
        if args.fill:
            print(f"  {db}: CPU per SSO, {args.fill} rows in replay/session/audit tables / empty = "
                  f"{ratio(f'SSO {db} 1 SP +filled', one, least_cpu)}")
        for ep in ("/saml/metadata", "/healthz"):
            print(f"  {db}: {ep} req/s / hello-world req/s = "
                  f"{ratio(f'{ep} {db}', 'Flask hello-world', lambda c: best(c).rps)}")
    for alg in args.algorithms:
        print(f"  key {alg}: SSO CPU {ratio(f'SSO sqlite 1 SP {alg}', one_sqlite(by), least_cpu)} x the init "
              f"key's; raw signature {by.get(f'raw signature, {alg} key') and least_cpu(by[f'raw signature, {alg} key']):.3f} ms")
    return rows


def one_sqlite(by: dict[str, Contender]) -> str:
    return "SSO sqlite 1 SP"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="time per contender per round (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers, as the README (default 4)")
    parser.add_argument("--server-threads", type=int, default=None,
                        help="threads per gthread worker (IDP_BRIDGE_THREADS; default the shipped config's 16)")
    parser.add_argument("--server-config", choices=["prod", "sync"], default="prod",
                        help="prod: the README's production command (shipped gunicorn config, gthread); "
                             "sync: gunicorn's default sync workers")
    parser.add_argument("--close", action="store_true",
                        help="every request on a new connection (Connection: close), as nginx without upstream "
                             "keep-alive talks to gunicorn")
    parser.add_argument("--dbs", default="sqlite,pg", type=lambda s: s.split(","))
    parser.add_argument("--sps", default="1,100,1000", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--fill", type=int, default=1_000_000, help="filler rows per table (0: skip)")
    parser.add_argument("--algorithms", default="rsa-2048,ec-p256", type=lambda s: [x for x in s.split(",") if x],
                        help="extra key algorithms to measure besides init's default ('' for none)")
    parser.add_argument("--sessions", type=int, default=1000, help="logged-in sessions the requests rotate over")
    parser.add_argument("--samples", type=int, default=20, help="Responses per SSO run judged by python3-saml")
    parser.add_argument("--server-cpus", default="0", help="CPU list for the servers (taskset -c)")
    parser.add_argument("--client-cpu", default="1", help="CPU for wrk")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--no-pysaml2", action="store_true")
    parser.add_argument("--only", default="", help="measure only contenders whose label contains this")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--quick", action="store_true", help="smoke run: sqlite, 1 SP, 1 round of 3 s, no filler")
    parser.add_argument("--raw-sign", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_sign:
        raw_sign(args.raw_sign, args.seconds)
        return
    if args.quick:
        args.seconds, args.rounds, args.dbs, args.sps, args.fill, args.algorithms = 3.0, 1, ["sqlite"], [1], 0, []
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    servers: list[Server] = []
    admin = None
    try:
        print(f"setting up in {work}", flush=True)
        contenders, servers, admin = build(args, work)
        for s in servers:  # one at a time: 4 workers each booting at once on one CPU is slow enough
            if args.server_threads is not None:
                s.env = {**s.env, "IDP_BRIDGE_THREADS": str(args.server_threads)}
            s.start(workers=args.workers, cpus=args.server_cpus, config=args.server_config)
            s.wait_ready("/" if s.name in ("hello", "pysaml2") else "/healthz")
        pg = PgBackends(args.pg_url) if "pg" in args.dbs else None
        chosen = [c for c in contenders if args.only in c.label]
        print(f"warming up {len(chosen)} contenders", flush=True)
        saved = args.seconds
        args.seconds = 2.0
        for c in chosen:
            if c.kind == "http":
                run_wrk(c, args, work, pg)
                c.verdicts = http_judge.Verdicts()
        args.seconds = saved
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds} ({dt.datetime.now(dt.UTC):%H:%M:%S} UTC, load "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
            for c in chosen:
                c.results.append(run_raw(c, args) if c.kind == "raw" else run_wrk(c, args, work, pg))
                last = c.results[-1]
                print(f"  {c.label:40} {last.rps:8.1f}/s  {last.web_cpu_ms + last.db_cpu_ms:6.3f} ms CPU"
                      f"{f'  {last.bad} bad' if last.bad else ''}", flush=True)
        rows = report(chosen, args)
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                            indent=1))
    finally:
        for s in servers:
            s.stop()
        if admin is not None:
            from sqlalchemy import text
            with admin.begin() as conn:
                for name, db, *_ in plan(args):
                    if db == "pg":
                        conn.execute(text(f'DROP SCHEMA IF EXISTS "bench_{name.replace("-", "_")}" CASCADE'))
            admin.dispose()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
