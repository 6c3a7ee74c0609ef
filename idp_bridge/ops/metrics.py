"""Prometheus metrics: what every process counts, and what a scrape reads from the key ring and the database.

Counters and histograms live in each process; under gunicorn (several workers) they are written to
``$PROMETHEUS_MULTIPROC_DIR`` and the scrape adds them up (prometheus_client's multiprocess mode; the shipped
gunicorn config sets the folder and marks dead workers). Gauges that describe shared state (days until each
key expires, the webhook outbox) are computed at scrape time by ``StateCollector``, so they never disagree
between workers. Rule: counting is one cheap call on the request path; nothing here does I/O there.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

LOGINS = Counter("idp_bridge_logins", "Signed Responses issued, by service provider", ["sp"])
REFUSALS = Counter("idp_bridge_refusals", "Refused requests and sign-ins, by stable error code", ["code"])
EVENTS = Counter("idp_bridge_audit_events", "Audited events, by event and outcome", ["event", "outcome"])
DB_ERRORS = Counter("idp_bridge_database_errors", "Requests answered 503 because the database failed")
SSO_SECONDS = Histogram("idp_bridge_sso_seconds", "Time to answer a /saml/sso or /saml/continue request",
                        buckets=_LATENCY)
SIGNING_SECONDS = Histogram("idp_bridge_signing_seconds", "Time to build and sign one Response", buckets=_LATENCY)


def count_event(event: str, outcome: str, reason_code: str | None, sp: str | None) -> None:
    """Called for every audit event (ops/audit.py): logins, refusals by code, and every event kind."""
    EVENTS.labels(event, outcome).inc()
    if event == "login" and outcome == "ok":
        LOGINS.labels(sp or "-").inc()
    elif outcome == "refused":
        REFUSALS.labels(reason_code or "unknown").inc()
    if reason_code == "store_unavailable":
        DB_ERRORS.inc()


class StateCollector(Collector):
    """Scrape-time gauges: days until each published key expires, the webhook outbox's depth and oldest age."""

    def __init__(self, keys: Callable[[], Any], outbox: Callable[[dt.datetime], tuple[int, float | None]]) -> None:
        self._keys = keys
        self._outbox = outbox

    def collect(self) -> Iterator[Metric]:
        now = dt.datetime.now(dt.UTC)
        expiry = GaugeMetricFamily("idp_bridge_key_expiry_days", "Days until a published signing key's certificate "
                                   "expires", labels=["key_id", "state"])
        try:
            for entry in self._keys().published:
                days = (entry.certificate.not_valid_after_utc - now).total_seconds() / 86400
                expiry.add_metric([entry.key_id, entry.state], round(days, 3))
        except Exception:  # noqa: S110 - a broken ring shows in /healthz; the scrape still answers
            pass
        yield expiry
        depth = GaugeMetricFamily("idp_bridge_webhook_outbox_depth", "Webhook deliveries not yet acknowledged")
        oldest = GaugeMetricFamily("idp_bridge_webhook_outbox_oldest_seconds",
                                   "Age of the oldest undelivered webhook (0 when none)")
        up = GaugeMetricFamily("idp_bridge_database_up", "1 when the database answered this scrape")
        try:
            count, age = self._outbox(now)
            depth.add_metric([], count)
            oldest.add_metric([], age or 0.0)
            up.add_metric([], 1)
        except Exception:
            up.add_metric([], 0)
        yield depth
        yield oldest
        yield up


def render(state: Collector | None = None) -> tuple[bytes, str]:
    """The exposition text for one scrape: every process's counters (multiprocess mode) plus the state gauges."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for metric in (LOGINS, REFUSALS, EVENTS, DB_ERRORS, SSO_SECONDS, SIGNING_SECONDS):
            registry.register(metric)
    if state is not None:
        registry.register(state)
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- gunicorn (called from the shipped gunicorn config) -----------------------------------------------
def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay counted)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
