"""Prometheus metrics on /metrics (SPEC 6), safe under gunicorn's many processes.

Counters of what the web processes see (events by source and status) use
prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set
(gunicorn.conf.py sets it). The state of the work (actions by kind and
status, durations, bytes transferred, queue depth, the oldest pending action)
is read from the database and Redis at scrape time: workers may run on other
machines, and the database is where every one of them records what it did.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from rq import Queue
from sqlalchemy import func, select

from listener.db import as_utc
from listener.models import actions

log = logging.getLogger(__name__)

EVENTS = Counter("listener_events", "Webhook calls answered, by source and answer", ["source", "status"])
REQUEST_SECONDS = Histogram("listener_webhook_seconds", "Time to answer a webhook", ["source"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

metrics = Blueprint("metrics", __name__)

# The labelled children, looked up once: labels() takes a lock and builds its key on every call.
_webhook_counters: dict[tuple[str, str], Counter] = {}
_webhook_timers: dict[str, Histogram] = {}


def count_webhook(source: str, status: str, seconds: float) -> None:
    """Count one answered webhook and the time its answer took."""
    counter = _webhook_counters.get((source, status))
    if counter is None:
        counter = _webhook_counters[source, status] = EVENTS.labels(source, status)
    timer = _webhook_timers.get(source)
    if timer is None:
        timer = _webhook_timers[source] = REQUEST_SECONDS.labels(source)
    counter.inc()
    timer.observe(seconds)


class WorkCollector(Collector):
    """Reads the state of the work from the database and Redis at each scrape."""

    def __init__(self, engine, redis_connection, queue_name: str) -> None:  # noqa: ANN001
        self.engine = engine
        self.redis = redis_connection
        self.queue_name = queue_name

    def collect(self) -> Iterator:
        by_status = GaugeMetricFamily("listener_actions", "Actions by kind and status", labels=["kind", "status"])
        transferred = CounterMetricFamily("listener_bytes_transferred", "Bytes moved by finished actions",
                                          labels=["kind"])
        durations = SummaryMetricFamily("listener_action_duration_seconds", "Time of the last attempt of the latest"
                                        " finished actions", labels=["kind"])
        oldest = GaugeMetricFamily("listener_oldest_pending_action_seconds",
                                   "Age of the oldest queued action whose time has come (0 if none)")
        with self.engine.connect() as conn:
            for kind, status, count in conn.execute(
                select(actions.c.kind, actions.c.status, func.count()).group_by(actions.c.kind, actions.c.status)
            ):
                by_status.add_metric([kind, status], count)
            moved = conn.execute(
                select(actions.c.kind, func.coalesce(func.sum(actions.c.bytes_done), 0))
                .where(actions.c.status == "done").group_by(actions.c.kind)
            ).all()
            # Durations of the latest 1,000 finished actions: bounded work per scrape.
            started_finished = conn.execute(
                select(actions.c.kind, actions.c.started_at, actions.c.finished_at)
                .where(actions.c.status == "done", actions.c.finished_at.is_not(None))
                .order_by(actions.c.id.desc()).limit(1000)
            ).all()
            oldest_created = conn.execute(
                select(func.min(actions.c.created_at)).where(
                    actions.c.status == "queued", actions.c.not_before.is_(None))
            ).scalar()
        for kind, total_bytes in moved:
            transferred.add_metric([kind], float(total_bytes))
        totals: dict[str, list[float]] = {}
        for kind, started, ended in started_finished:
            if started and ended:
                entry = totals.setdefault(kind, [0, 0.0])
                entry[0] += 1
                entry[1] += (as_utc(ended) - as_utc(started)).total_seconds()
        for kind, (count, seconds) in totals.items():
            durations.add_metric([kind], count_value=count, sum_value=seconds)
        age = (datetime.now(UTC) - as_utc(oldest_created)).total_seconds() if oldest_created else 0.0
        oldest.add_metric([], max(age, 0.0))
        yield from (by_status, transferred, durations, oldest)
        depth = GaugeMetricFamily("listener_queue_depth", "Jobs waiting in the RQ queue")
        try:
            depth.add_metric([], Queue(self.queue_name, connection=self.redis).count)
            yield depth
        except Exception as error:  # noqa: BLE001 - Redis down: the other metrics still answer
            log.warning("listener.metrics.redis_unavailable error=%s", error)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # prometheus-client's own switch, read by it at import
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        for collector in (EVENTS, REQUEST_SECONDS):
            if collector in REGISTRY._collector_to_names:  # registered by default in single-process mode
                registry.register(collector)
    runtime = current_app.extensions["listener.runtime"]
    registry.register(WorkCollector(runtime.engine, current_app.extensions["listener.outbox"].redis,
                                    runtime.settings.queue_name))
    return registry


@metrics.get("/metrics")
def serve_metrics() -> Response:
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
