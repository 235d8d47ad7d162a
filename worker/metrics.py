"""Prometheus metrics of the daemon (served on /metrics by :mod:`worker.health`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

JOBS = Counter(
    "vidworker_jobs", "Messages settled, by task and outcome", ["task", "outcome"], registry=REGISTRY
)
JOB_SECONDS = Histogram(
    "vidworker_job_seconds",
    "Wall time per handled message, in seconds",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600),
    registry=REGISTRY,
)
RECEIVE_ERRORS = Counter("vidworker_receive_errors", "Failed SQS receive calls", registry=REGISTRY)
