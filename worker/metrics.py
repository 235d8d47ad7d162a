"""Prometheus metrics of the daemon (served on /metrics by :mod:`worker.health`)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

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
FRAMES = Counter(
    "vidworker_frames",
    "Upscaled frames, by how: computed by the network or reused from the previous frame (identical input)",
    ["how"],
    registry=REGISTRY,
)
RECEIVE_ERRORS = Counter("vidworker_receive_errors", "Failed SQS receive calls", registry=REGISTRY)
LOOP_ERRORS = Counter(
    "vidworker_loop_errors",
    "Unexpected errors while handling a message (the loop went on)",
    registry=REGISTRY,
)
SETTLE_ERRORS = Counter(
    "vidworker_settle_errors", "Failed settling calls (delete, retry, hand back, outbox)", ["call"],
    registry=REGISTRY,
)  # fmt: skip
HEARTBEAT_FAILURES = Counter(
    "vidworker_heartbeat_failures", "Visibility extensions that failed", registry=REGISTRY
)
LEASES_LOST = Counter(
    "vidworker_leases_lost", "Jobs stopped because their message was lost", registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "vidworker_dead_letters_failed", "Dead-lettered jobs reported FAILED by the watcher", registry=REGISTRY
)
OUTBOX = Counter(
    "vidworker_outbox", "Kept terminal callbacks, by what became of them", ["outcome"], registry=REGISTRY
)


CALLBACKS = Counter(
    "vidworker_callbacks", "Callback sends (every try of every event), by outcome: delivered, failed",
    ["outcome"], registry=REGISTRY,
)  # fmt: skip
RUNNING = Gauge(
    "vidworker_running", "Messages in hand (0 or 1), by task and stage: whole, segment, merge",
    ["task", "stage"], registry=REGISTRY,
)  # fmt: skip
PROGRESS_TIME = Gauge(
    "vidworker_progress_timestamp_seconds",
    "Unix time of the running job's last progress (its start before the first); 0 when idle",
    registry=REGISTRY,
)
DRAINING = Gauge(
    "vidworker_draining", "1 once the worker stops taking jobs (signal or notice)", registry=REGISTRY
)
PROTECTED = Gauge(
    "vidworker_scale_in_protected", "1 while this instance is protected from scale-in", registry=REGISTRY
)
NOTICES = Counter(
    "vidworker_instance_notices", "Notices that this instance is going away, by kind: spot, lifecycle",
    ["kind"], registry=REGISTRY,
)  # fmt: skip
AUTOSCALING_ERRORS = Counter(
    "vidworker_autoscaling_errors", "Failed Auto Scaling calls, by call", ["call"], registry=REGISTRY
)


def count_frames(frames: int, reused: int) -> None:
    """An upscale finished: ``frames`` output frames, ``reused`` of them without running the network."""
    FRAMES.labels("reused").inc(reused)
    FRAMES.labels("computed").inc(frames - reused)


class HostCollector(Collector):
    """What the worker reads on a scrape, not counts: its queues' depth and its temp disk's free space.

    ``queues()`` answers ``{(queue, dead): (visible, in_flight)}``, read from SQS
    at most every ``every`` seconds (a scrape must not cost one SQS call per
    queue); a failed read keeps the last answer.
    """

    def __init__(
        self, queues: Callable[[], Mapping[tuple[str, bool], tuple[int, int]]],
        free_bytes: Callable[[], int], *, every: float = 15.0,
    ) -> None:  # fmt: skip
        self.queues, self.free_bytes, self.every = queues, free_bytes, every
        self._depth: Mapping[tuple[str, bool], tuple[int, int]] = {}
        self._read = -every

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if time.monotonic() - self._read >= self.every:
            self._read = time.monotonic()
            try:
                self._depth = self.queues()
            except Exception as error:  # SQS unreachable: the last depth stands, the scrape still answers
                log.debug("queue depth not read: %s", error)
        depth = GaugeMetricFamily(
            "vidworker_queue_messages", "Messages in the worker's queues and their dead-letter queues",
            labels=["queue", "dead_letter", "state"],
        )  # fmt: skip
        for (queue, dead), (visible, in_flight) in sorted(self._depth.items()):
            depth.add_metric([queue, str(dead).lower(), "visible"], visible)
            depth.add_metric([queue, str(dead).lower(), "in_flight"], in_flight)
        yield depth
        free = GaugeMetricFamily("vidworker_tmp_free_bytes", "Free bytes on WORKER_TMP_DIR's file system")
        with contextlib.suppress(OSError):  # the directory is gone: no sample rather than a wrong one
            free.add_metric([], self.free_bytes())
        yield free
