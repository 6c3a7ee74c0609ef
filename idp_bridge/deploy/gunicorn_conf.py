"""The shipped gunicorn configuration: ``gunicorn -c python:idp_bridge.deploy.gunicorn_conf`` (what
``idp-bridge serve`` runs). Command-line flags override any setting here.

Rule: every choice below is one docs/deployment.md explains; change them together.

- ``gthread`` workers: a connection that sends nothing is parked on the worker's poller (no thread held),
  and one that stalls half-way through its request holds one thread of ``workers * threads``, not a whole
  worker, so a handful of stalled clients cannot starve ``/healthz``. The real defence against slow
  clients is nginx in front (it buffers whole requests before gunicorn sees them): deploy/nginx-idp-bridge.conf.
- ``preload_app = False``: every worker builds the app itself, so ``kill -HUP`` (config change) and
  ``kill -USR2`` (upgrade) load the new config and code, and the app's background threads (purge and
  webhook loops) start in the worker, never in the master before ``fork``.
- ``graceful_timeout``: how long a stopping worker finishes its in-flight requests (HUP, USR2, TERM).
- Bound to 127.0.0.1: the reverse proxy is the only client.
- Metrics: every worker writes its counters to ``$PROMETHEUS_MULTIPROC_DIR`` (a new folder per master unless
  set; an upgraded master inherits its parent's), and ``/metrics`` adds them up. It is set here, in the
  master, before any worker imports prometheus_client; dead workers are marked in ``child_exit``.
"""

from __future__ import annotations

import os
import tempfile

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="idp-bridge-metrics-")

wsgi_app = "idp_bridge.web:create_app()"
bind = [os.environ.get("IDP_BRIDGE_BIND", "127.0.0.1:8000")]
worker_class = "gthread"
workers = int(os.environ.get("IDP_BRIDGE_WORKERS", "2"))  # production: --workers 2 x CPUs (docs)
threads = int(os.environ.get("IDP_BRIDGE_THREADS", "16"))
preload_app = False
# A worker whose main loop stops answering the master for this long is killed and replaced.
timeout = 30
graceful_timeout = int(os.environ.get("IDP_BRIDGE_GRACEFUL_TIMEOUT", "20"))
# Kept-alive connections (direct clients only; nginx talks HTTP/1.0 to the upstream by default).
keepalive = 5
# Request limits: a SAMLRequest on the Redirect binding (deflated, base64, signed) fits easily in 8 KiB.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# The proxy on this host sets X-Forwarded-*; the app trusts them only with trust_forwarded_headers = true.
forwarded_allow_ips = "127.0.0.1,::1"
# nginx logs every request; gunicorn logs its own events (workers, signals, errors) to stderr.
accesslog = None
errorlog = "-"


def child_exit(server: object, worker: object) -> None:
    """A worker is gone: its live gauges go too (its counters stay in the sum)."""
    from idp_bridge.ops.metrics import worker_exited

    worker_exited(int(getattr(worker, "pid", 0)))


def post_worker_init(worker: object) -> None:
    """One log line per worker once the app is loaded: the upgrade procedure waits for these lines of the new
    master's workers before stopping the old master (docs/deployment.md)."""
    log = getattr(worker, "log", None)
    if log is not None:
        log.info("idp-bridge worker %s ready (master %s)", os.getpid(), os.getppid())
# gunicorn's control socket defaults to one fixed path per user ($XDG_RUNTIME_DIR or ~/.gunicorn): two
# bridges (or a bridge and any other gunicorn) on one host would fight over it. Signals do the same job.
control_socket_disable = True
