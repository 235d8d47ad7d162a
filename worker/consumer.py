"""SQS: receive in queue priority order, delete, release."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One message and where it came from; ``attempt`` is SQS's ApproximateReceiveCount."""

    queue: str
    queue_url: str
    message_id: str
    receipt: str
    body: str
    attempt: int


class Consumer:
    """Long-polls ``queues`` (name → URL, highest priority first).

    Each call to :meth:`receive` first asks every queue without waiting, in
    priority order, then long-polls the first one: a GPU host picks up GPU work
    at once and CPU work when the GPU queue is empty, and an idle worker makes
    one request per ``wait_seconds``.
    """

    def __init__(
        self, sqs: Any, queues: dict[str, str], *, wait_seconds: int, visibility_timeout: int
    ) -> None:
        self.sqs = sqs
        self.queues = queues
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout

    def max_receives(self) -> dict[str, int | None]:
        """Each queue's redrive ``maxReceiveCount`` (``None``: no dead-letter queue configured)."""
        limits: dict[str, int | None] = {}
        for name, url in self.queues.items():
            attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
            policy = attributes.get("Attributes", {}).get("RedrivePolicy")
            limits[name] = int(json.loads(policy)["maxReceiveCount"]) if policy else None
        return limits

    def receive(self) -> Received | None:
        names = list(self.queues)
        for name in names:
            found = self._receive(name, wait=0)
            if found is not None:
                return found
        return self._receive(names[0], wait=self.wait_seconds)

    def _receive(self, name: str, *, wait: int) -> Received | None:
        url = self.queues[name]
        reply = self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=wait,
            VisibilityTimeout=self.visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        for message in reply.get("Messages", []):
            return Received(
                queue=name,
                queue_url=url,
                message_id=message["MessageId"],
                receipt=message["ReceiptHandle"],
                body=message.get("Body", ""),
                attempt=int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
        return None

    def delete(self, received: Received) -> None:
        self.sqs.delete_message(QueueUrl=received.queue_url, ReceiptHandle=received.receipt)

    def release(self, received: Received, delay: int = 0) -> None:
        """Make the message visible again after ``delay`` seconds (0: now)."""
        self.sqs.change_message_visibility(
            QueueUrl=received.queue_url, ReceiptHandle=received.receipt, VisibilityTimeout=delay
        )
