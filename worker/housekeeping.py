"""Background duties of every worker: report dead-lettered jobs, re-send kept callbacks.

* Dead-letter watcher: a job whose worker died on every try (OOM killer, a
  crashing decoder) reaches the dead-letter queue through the redrive policy
  without any attempt having said so. Every ``interval`` seconds each worker
  looks through its queues' DLQs; for a job whose outcome is not decided
  (no ``result.json``, no terminal marker) it decides FAILED
  (``WORKER_DIED``, retryable) and calls the backend — or COMPLETED when the
  output was recorded but its outcome never written — the terminal marker
  makes that happen once across the fleet. Messages stay in the DLQ,
  redrivable (``python -m worker redrive``).
* Outbox: terminal callbacks the backend did not take are re-sent until
  delivered or older than ``CALLBACK_OUTBOX_HOURS``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from worker import metrics
from worker.consumer import Received
from worker.errors import WorkerDied
from worker.message import Callback, Status, decode
from worker.notify import CallbackRefused
from worker.state import Terminal

if TYPE_CHECKING:
    from worker.daemon import Worker

log = logging.getLogger(__name__)

SCAN_LIMIT = 100
"""Messages looked at per dead-letter queue per round."""
HOLD_SECONDS = 30
"""How long a message is held invisible while the watcher looks at it."""


class Housekeeping:
    """A daemon thread doing one round every ``interval`` seconds (0: never)."""

    def __init__(self, worker: Worker, *, interval: float) -> None:
        self.worker = worker
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.worker.notifier.timeout + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.round()
            except Exception:
                log.exception("housekeeping round failed; next round in %g s", self.interval)

    def round(self) -> None:
        """One pass over the dead-letter queues, then the outbox."""
        for name, policy in self.worker.policies().items():
            if policy is not None:
                self.watch(name, policy[1])
        self.resend()

    # ------------------------------------------------------------------ dead letters

    def watch(self, name: str, url: str) -> int:
        """Report the undecided jobs in one dead-letter queue; returns how many were reported."""
        consumer = self.worker.consumer
        seen: set[str] = set()
        held: list[Received] = []
        reported = 0
        try:
            while len(seen) < SCAN_LIMIT and not self._stop.is_set():
                received = consumer.receive_from(name, url, wait=0, visibility=HOLD_SECONDS)
                if received is None or received.message_id in seen:
                    break
                seen.add(received.message_id)
                held.append(received)
                reported += self._report(received)
        finally:
            for received in held:  # visible again for an operator's redrive
                self.worker.settle("unhold", lambda item=received: consumer.retry_later(item, 0))  # type: ignore[misc]
        return reported

    def _report(self, received: Received) -> int:
        try:
            job = decode(received.body)
        except Exception:
            return 0  # not a job: nobody to tell
        state = self.worker.state
        callback = job.callback_url or self.worker.settings.callback_url
        if state.terminal(job.job_id, received.lifetime) is not None:
            return 0
        record = state.result(job.job_id)
        if record is not None:  # published and recorded, then the outcome could not be written
            self.worker.deliver(
                callback, state.decide(job.job_id, received.lifetime, Status.COMPLETED, record)
            )
            self.worker.settle("remove segments", lambda: self.worker.splitter.cleanup(job.job_id))
            return 0
        error = WorkerDied(f"the worker died on every try ({received.receives} receives); dead-lettered")
        body = Callback(
            job_id=job.job_id, status=Status.FAILED, message=str(error), error_code=error.code,
            error_message=str(error), retryable=True, attempt=received.attempt - 1,
        ).body()  # fmt: skip
        terminal = state.decide(job.job_id, received.lifetime, Status.FAILED, body)
        if not terminal.ours:
            return 0
        log.error("job %s was dead-lettered after its worker died on every try; reporting FAILED", job.job_id)
        metrics.DEAD_LETTERS.inc()
        self.worker.deliver(callback, terminal)
        self.worker.settle("remove segments", lambda: self.worker.splitter.cleanup(job.job_id))
        return 1

    # ------------------------------------------------------------------ outbox

    def resend(self) -> None:
        """Re-send kept terminal callbacks; drop those delivered or past ``CALLBACK_OUTBOX_HOURS``."""
        state = self.worker.state
        oldest = time.time() - self.worker.settings.outbox_hours * 3600
        for key, entry in state.kept():
            if self._stop.is_set():
                return
            if float(entry.get("keptAt", 0)) < oldest:
                log.error("giving up on callback %s: older than CALLBACK_OUTBOX_HOURS", entry.get("eventId"))
                metrics.OUTBOX.labels("expired").inc()
                state.forget(key)
                continue
            body = entry["body"]
            terminal = Terminal(Status(body["status"]), str(entry["eventId"]), body, ours=False)
            try:
                sent = self.worker.notifier.send(
                    str(entry["url"]), self.worker.sendable(terminal), event_id=terminal.event_id
                )
            except CallbackRefused as refused:
                log.error("dropping kept callback %s: %s", terminal.event_id, refused)
                state.forget(key)
                continue
            if sent.delivered:
                metrics.OUTBOX.labels("delivered").inc()
                state.forget(key)
