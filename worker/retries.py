"""The failure policy, in one place: what a failed try does to its job and its message.

* lease lost (the heartbeat could not keep the message) → leave everything:
  the run that holds the message now settles it;
* shutdown (warm drain over, cold stop, a lost GPU) → hand the job back: a
  fresh copy of the message, this try not spent;
* cancelled by the backend → CANCELLED, message deleted;
* permanent (``retryable`` False: bad message, refused media, timeout) →
  FAILED, message deleted, never retried;
* transient (anything else) with tries left → visible again after an
  exponential backoff (ChangeMessageVisibility, so FIFO queues work too);
* transient on the last try → FAILED (``retryable: true``) once, and the
  message released so the queue's redrive policy moves it to the dead-letter
  queue, from where an operator may redrive it; a queue without a redrive
  policy has it deleted instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from errors import ErrorCode
from worker.message import Status

SQS_MAX_VISIBILITY = 43200
"""Seconds; SQS refuses a longer visibility timeout."""


class Action(StrEnum):
    DELETE = "delete"  # the outcome is decided; the message goes
    RETRY = "retry"  # visible again after ``delay``; this try counts
    DEAD_LETTER = "dead-letter"  # last try: released now, the redrive policy moves it
    HAND_BACK = "hand-back"  # shutdown: a fresh copy, this try not spent
    LEAVE = "leave"  # the lease is lost: not ours to settle


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: int
    terminal: Status | None  # the outcome to decide now (and call back), if any
    code: str
    retryable: bool


def describe(error: BaseException) -> tuple[str, bool]:
    """``(errorCode, retryable)`` of any exception; unknown exceptions are worker faults, retryable."""
    code = getattr(error, "code", ErrorCode.INTERNAL_ERROR)
    return str(code), bool(getattr(error, "retryable", True))


def backoff(attempt: int, base: float, cap: float, floor: float = 1.0) -> float:
    """Seconds to wait after failure number ``attempt`` (1-based), at least ``floor``.

    Exponential (``base * 2**(attempt-1)``, at most ``cap`` and SQS's visibility
    limit), jittered over the upper half of the window. The one backoff of the
    daemon: job retries, receive errors and callback retries all use it.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1), SQS_MAX_VISIBILITY)
    return max(floor, random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not crypto


def decide(
    error: BaseException,
    *,
    attempt: int,
    max_attempts: int,
    dead_letter: bool,
    base: float,
    cap: float,
    shutting_down: bool = False,
) -> Decision:
    """What to do with the job whose try number ``attempt`` raised ``error``."""
    code, retryable = describe(error)
    if code == ErrorCode.LEASE_LOST:
        return Decision(Action.LEAVE, 0, None, code, True)
    if code in (ErrorCode.ABORTED, ErrorCode.DEVICE_LOST) or (code == ErrorCode.CANCELLED and shutting_down):
        return Decision(Action.HAND_BACK, 0, None, code, True)
    if code == ErrorCode.CANCELLED:
        return Decision(Action.DELETE, 0, Status.CANCELLED, code, False)
    if not retryable:
        return Decision(Action.DELETE, 0, Status.FAILED, code, False)
    if attempt < max_attempts:
        return Decision(Action.RETRY, round(backoff(attempt, base, cap)), None, code, True)
    if dead_letter:
        return Decision(Action.DEAD_LETTER, 0, Status.FAILED, code, True)
    return Decision(Action.DELETE, 0, Status.FAILED, code, True)
