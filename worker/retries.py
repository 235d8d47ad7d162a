"""The failure policy, in one place: what a failed job does to its message.

* permanent (``retryable`` False: bad message, refused media, missing source)
  → FAILED callback, message deleted, never retried;
* transient (anything else) → message released with exponential backoff via
  ChangeMessageVisibility; SQS's ``ApproximateReceiveCount`` is the attempt
  number and the queue's redrive policy moves the message to the DLQ after
  ``maxReceiveCount`` receives. The last attempt sends FAILED (retryable) and
  releases the message one more time, so the redrive policy takes it; a queue
  without a redrive policy has the message deleted instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

SQS_MAX_VISIBILITY = 43200
"""Seconds; SQS refuses a longer visibility timeout."""


class Action(StrEnum):
    DELETE = "delete"  # done, or permanently failed
    RETRY = "retry"  # release for another attempt after ``delay``
    DEAD_LETTER = "dead-letter"  # last attempt: release now; the redrive policy moves it


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: int
    notify: bool  # send the FAILED callback now
    code: str
    retryable: bool


def describe(error: BaseException) -> tuple[str, bool]:
    """``(errorCode, retryable)`` of any exception; unknown exceptions are worker faults, retryable."""
    return str(getattr(error, "code", "INTERNAL_ERROR")), bool(getattr(error, "retryable", True))


def backoff(attempt: int, base: float, cap: float) -> int:
    """Seconds before attempt ``attempt + 1``: exponential with full jitter, at least 1 s."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1), SQS_MAX_VISIBILITY)
    return max(1, round(random.uniform(ceiling / 2, ceiling)))  # noqa: S311 - jitter, not crypto


def decide(
    error: BaseException, *, attempt: int, max_attempts: int, dead_letter: bool, base: float, cap: float
) -> Decision:
    """What to do with the message of a job that raised ``error`` on receive number ``attempt``."""
    code, retryable = describe(error)
    if not retryable:
        return Decision(Action.DELETE, 0, True, code, False)
    if attempt < max_attempts:
        return Decision(Action.RETRY, backoff(attempt, base, cap), False, code, True)
    if dead_letter:
        return Decision(Action.DEAD_LETTER, 0, True, code, True)
    return Decision(Action.DELETE, 0, True, code, True)
