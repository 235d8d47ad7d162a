"""Keep a message invisible while its job runs; stop the moment the job ends; say when the lease is lost."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from botocore.exceptions import ClientError

from worker import metrics
from worker.retries import SQS_MAX_VISIBILITY

log = logging.getLogger(__name__)

GONE = {
    "ReceiptHandleIsInvalid",
    "InvalidParameterValue",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
}
"""SQS error codes that mean the message is not ours to extend any more."""


class Heartbeat:
    """Every ``interval`` seconds, extend the message's visibility to ``extend_to`` seconds from now.

    ``lost`` is set — and extending stops — when SQS says the message is gone
    (deleted, the receipt handle stale because another worker received it), or
    when failed extensions leave the message about to become visible before the
    next beat could save it. The job must then stop before publishing. SQS caps
    a message's invisibility at 12 hours from its receive; the job deadline
    (``WORKER_JOB_TIMEOUT``) ends a job before that.
    """

    def __init__(self, sqs: Any, queue_url: str, receipt: str, *, interval: float, extend_to: int) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.receipt = receipt
        self.interval = interval
        self.extend_to = extend_to
        self.beats = 0
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._covered_until = self._started + extend_to  # the receive made it invisible this long
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
            if not self._beat(timeout):
                return

    def _beat(self, timeout: int) -> bool:
        """One extension; False once the lease is lost."""
        asked = time.monotonic()
        try:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=self.receipt, VisibilityTimeout=timeout
            )
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in GONE:
                return self._lose(f"SQS says the message is gone ({code})")
            return self._missed(error)
        except Exception as error:  # network: tried again next beat while the lease lasts
            return self._missed(error)
        self._covered_until = asked + timeout
        self.beats += 1
        return True

    def _missed(self, error: Exception) -> bool:
        metrics.HEARTBEAT_FAILURES.inc()
        if time.monotonic() + self.interval >= self._covered_until:
            return self._lose(f"visibility could not be extended before it runs out ({error})")
        log.warning("visibility extension failed (tried again next beat): %s", error)
        return True

    def _lose(self, why: str) -> bool:
        log.error("lease lost: %s; the job stops before publishing", why)
        metrics.LEASES_LOST.inc()
        self.lost.set()
        return False
