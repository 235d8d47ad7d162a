"""Keep a message invisible while its job runs; stop the moment the job ends."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from worker.retries import SQS_MAX_VISIBILITY

log = logging.getLogger(__name__)


class Heartbeat:
    """Every ``interval`` seconds, extend the message's visibility to ``extend_to`` seconds from now.

    SQS caps a message's total invisibility at 12 hours from its receive, so
    extensions stop short of that cap. Failures are logged and retried on the
    next beat: a missed beat costs at most one ``interval`` of margin.
    """

    def __init__(self, sqs: Any, queue_url: str, receipt: str, *, interval: float, extend_to: int) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.receipt = receipt
        self.interval = interval
        self.extend_to = extend_to
        self.beats = 0
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop extending; returns once no extension is in flight."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            remaining = SQS_MAX_VISIBILITY - (time.monotonic() - self._started) - 60
            timeout = int(min(self.extend_to, remaining))
            if timeout <= 0:
                log.warning("message reached the 12 h visibility cap; no more extensions")
                return
            try:
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=self.receipt, VisibilityTimeout=timeout
                )
                self.beats += 1
            except Exception as error:  # logged, tried again next beat
                log.warning("visibility extension failed: %s", error)
