"""SQS: receive in queue priority order; delete, back off, hand back; standard and FIFO queues.

Two message attributes travel with a job when the worker sends a fresh copy
of its message (a drain's hand-back, an operator's redrive): SQS cannot lower
a receive count, so the copy carries the tries already spent
(``vidworker-attempts``) and the job's lifetime (``vidworker-lifetime``,
raised by each redrive from the dead-letter queue).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ATTEMPTS = "vidworker-attempts"
LIFETIME = "vidworker-lifetime"
REDRIVE_WAIT = 10
"""Seconds ``redrive`` long-polls for its first message: a dead-letter watcher holds what it scans
until the scan ends (a few seconds), then makes it visible again."""


@dataclass(frozen=True)
class Received:
    """One message and where it came from.

    ``attempt`` counts this job's tries in its lifetime: the tries a copy
    carried plus SQS's ApproximateReceiveCount of this copy.
    """

    queue: str
    queue_url: str
    message_id: str
    receipt: str
    body: str
    attempt: int
    lifetime: int = 0
    group: str | None = None  # FIFO MessageGroupId
    receives: int = 1  # ApproximateReceiveCount of this copy
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


def _number(attributes: dict[str, Any], name: str) -> int:
    value = attributes.get(name, {}).get("StringValue", "0")
    return int(value) if str(value).isdigit() and len(str(value)) < 6 else 0


def is_fifo(url: str) -> bool:
    return url.rstrip("/").endswith(".fifo")


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

    def redrive_policy(self, url: str) -> tuple[int, str] | None:
        """``(maxReceiveCount, dead-letter queue URL)`` of a queue, or None without a redrive policy."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
        policy = attributes.get("Attributes", {}).get("RedrivePolicy")
        if not policy:
            return None
        parsed = json.loads(policy)
        arn = str(parsed["deadLetterTargetArn"]).split(":")
        dead = self.sqs.get_queue_url(QueueName=arn[-1], QueueOwnerAWSAccountId=arn[-2])["QueueUrl"]
        return int(parsed["maxReceiveCount"]), str(dead)

    def depth(self, url: str) -> tuple[int, int]:
        """(visible, in flight) messages of a queue, as SQS approximates them."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names).get("Attributes", {})
        return int(attributes.get(names[0], 0)), int(attributes.get(names[1], 0))

    def receive(self) -> Received | None:
        names = list(self.queues)
        for name in names:
            found = self.receive_from(name, self.queues[name], wait=0)
            if found is not None:
                return found
        return self.receive_from(names[0], self.queues[names[0]], wait=self.wait_seconds)

    def receive_from(
        self, name: str, url: str, *, wait: int, visibility: int | None = None
    ) -> Received | None:
        reply = self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=1,
            WaitTimeSeconds=wait,
            VisibilityTimeout=self.visibility_timeout if visibility is None else visibility,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
            MessageAttributeNames=["All"],
        )
        for message in reply.get("Messages", []):
            system = message.get("Attributes", {})
            custom = message.get("MessageAttributes", {})
            receives = int(system.get("ApproximateReceiveCount", "1"))
            return Received(
                queue=name,
                queue_url=url,
                message_id=message["MessageId"],
                receipt=message["ReceiptHandle"],
                body=message.get("Body", ""),
                attempt=_number(custom, ATTEMPTS) + receives,
                lifetime=_number(custom, LIFETIME),
                group=system.get("MessageGroupId"),
                receives=receives,
                attributes=custom,
            )
        return None

    def delete(self, received: Received) -> None:
        self.sqs.delete_message(QueueUrl=received.queue_url, ReceiptHandle=received.receipt)

    def retry_later(self, received: Received, delay: int) -> None:
        """Make the message visible again after ``delay`` seconds; this try counts."""
        self.sqs.change_message_visibility(
            QueueUrl=received.queue_url, ReceiptHandle=received.receipt, VisibilityTimeout=delay
        )

    def hand_back(self, received: Received) -> None:
        """Give the job to another worker at once without spending a try: send a copy, delete this one."""
        self.send_copy(
            received, received.queue_url, attempts=received.attempt - 1, lifetime=received.lifetime
        )
        self.delete(received)

    def send_copy(self, received: Received, url: str, *, attempts: int, lifetime: int) -> None:
        """Send ``received``'s body to ``url`` carrying ``attempts`` tries spent and ``lifetime``.

        On a FIFO queue the copy keeps its MessageGroupId and gets a fresh
        deduplication id (a repeated one would be dropped for 5 minutes).
        """
        attributes = {
            **{key: value for key, value in received.attributes.items() if key not in (ATTEMPTS, LIFETIME)},
            ATTEMPTS: {"DataType": "Number", "StringValue": str(max(0, attempts))},
            LIFETIME: {"DataType": "Number", "StringValue": str(lifetime)},
        }
        self.send(url, received.body, attributes, group=received.group or "vidworker")

    def send(
        self,
        url: str,
        body: str,
        attributes: dict[str, Any] | None = None,
        *,
        group: str,
        dedup: str | None = None,
    ) -> None:
        """Send ``body`` to ``url``; on a FIFO queue in message group ``group``, deduplicated by
        ``dedup`` (default: a fresh id)."""
        extra: dict[str, Any] = {}
        if is_fifo(url):
            extra = {"MessageGroupId": group, "MessageDeduplicationId": dedup or uuid.uuid4().hex}
        self.sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes or {}, **extra)

    def redrive(self, name: str, limit: int | None = None) -> int:
        """Move queue ``name``'s dead letters back to it (receive, send, delete); returns how many.

        Each copy starts a new lifetime of its job: its tries start from zero,
        and its outcome is decided anew (a FAILED may be followed by COMPLETED).
        """
        url = self.queues[name]
        policy = self.redrive_policy(url)
        if policy is None:
            return 0
        moved = 0
        while limit is None or moved < limit:
            # the first receive waits a little: a dead-letter watcher may be holding the messages for its scan
            received = self.receive_from(name, policy[1], wait=0 if moved else REDRIVE_WAIT, visibility=60)
            if received is None:
                break
            self.send_copy(received, url, attempts=0, lifetime=received.lifetime + 1)
            self.delete(received)
            moved += 1
        return moved
