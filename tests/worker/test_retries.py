"""The failure policy: what a failed job does to its message, and the backoff between attempts."""

from __future__ import annotations

import math

import pytest

from worker.errors import SourceNotFound, StorageUnavailable
from worker.message import BadMessage, Status
from worker.retries import SQS_MAX_VISIBILITY, Action, Decision, backoff, decide, describe

SAMPLES = 400


class Coded(Exception):
    def __init__(self, code: object = None, retryable: object = None) -> None:
        super().__init__("coded")
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


def samples(attempt: int, base: float, cap: float) -> list[float]:
    return [backoff(attempt, base, cap) for _ in range(SAMPLES)]


def within(values: list[float], ceiling: float) -> bool:
    """Every value in the jitter window [ceiling/2, ceiling], allowing for rounding to whole seconds."""
    low, high = max(1, math.floor(ceiling / 2)), max(1, math.ceil(ceiling))
    return all(low <= value <= high for value in values)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("boom"), ("INTERNAL_ERROR", True)),
        (Coded(code="GPU_LOST"), ("GPU_LOST", True)),
        (Coded(retryable=False), ("INTERNAL_ERROR", False)),
        (Coded(code="UNSUPPORTED_MEDIA", retryable=False), ("UNSUPPORTED_MEDIA", False)),
        (Coded(code=409, retryable=0), ("409", False)),
        (SourceNotFound("gone"), ("SOURCE_NOT_FOUND", False)),
        (StorageUnavailable("503"), ("STORAGE_ERROR", True)),
        (BadMessage("not json"), ("INPUT_INVALID", False)),
    ],
    ids=["plain", "code-only", "retryable-only", "both", "coerced", "not-found", "storage", "bad-message"],
)
def test_describe(error: BaseException, expected: tuple[str, bool]) -> None:
    assert describe(error) == expected


@pytest.mark.parametrize("attempt", [1, 3, 7])
@pytest.mark.parametrize("dead_letter", [True, False])
def test_permanent_failure_is_deleted_and_notified_on_any_attempt(attempt: int, dead_letter: bool) -> None:
    decision = decide(
        SourceNotFound("gone"), attempt=attempt, max_attempts=3, dead_letter=dead_letter, base=30, cap=900
    )
    assert decision == Decision(Action.DELETE, 0, Status.FAILED, "SOURCE_NOT_FOUND", False)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 30), (2, 60), (4, 240)])
def test_transient_failure_below_the_limit_is_retried_silently(attempt: int, ceiling: float) -> None:
    for _ in range(50):
        decision = decide(
            StorageUnavailable("503"), attempt=attempt, max_attempts=5, dead_letter=True, base=30, cap=900
        )
        assert decision.action is Action.RETRY
        assert decision.terminal is None
        assert (decision.code, decision.retryable) == ("STORAGE_ERROR", True)
        assert within([decision.delay], ceiling), decision.delay


@pytest.mark.parametrize("attempt", [3, 4])
def test_last_attempt_with_a_dead_letter_queue_goes_there_and_notifies(attempt: int) -> None:
    decision = decide(RuntimeError("x"), attempt=attempt, max_attempts=3, dead_letter=True, base=30, cap=900)
    assert decision == Decision(Action.DEAD_LETTER, 0, Status.FAILED, "INTERNAL_ERROR", True)


@pytest.mark.parametrize("attempt", [3, 4])
def test_last_attempt_without_a_dead_letter_queue_is_deleted_and_notifies(attempt: int) -> None:
    decision = decide(RuntimeError("x"), attempt=attempt, max_attempts=3, dead_letter=False, base=30, cap=900)
    assert decision == Decision(Action.DELETE, 0, Status.FAILED, "INTERNAL_ERROR", True)


def test_single_attempt_policy_never_retries() -> None:
    decision = decide(RuntimeError("x"), attempt=1, max_attempts=1, dead_letter=True, base=30, cap=900)
    assert decision.action is Action.DEAD_LETTER


def test_backoff_grows_exponentially_within_the_jitter_window() -> None:
    previous_max = 0.0
    for attempt in range(1, 7):
        ceiling = 30 * 2 ** (attempt - 1)
        values = samples(attempt, 30, 10_000)
        assert within(values, ceiling), (attempt, min(values), max(values))
        assert min(values) >= previous_max  # windows [c/2, c] and [c, 2c] only touch
        previous_max = max(values)


def test_backoff_jitter_spreads_over_the_window() -> None:
    values = samples(5, 30, 900)  # ceiling 480: window 240..480
    assert within(values, 480)
    assert len(set(values)) > 20
    assert min(values) < 300 and max(values) > 420


def test_attempt_zero_waits_like_the_first() -> None:
    assert within(samples(0, 30, 900), 30)


def test_backoff_is_capped_by_cap() -> None:
    assert within(samples(10, 30, 900), 900)
    assert within(samples(3, 30, 50), 50)


def test_backoff_is_capped_by_the_sqs_visibility_limit() -> None:
    values = samples(40, 30, 10**9)
    assert within(values, SQS_MAX_VISIBILITY)
    assert max(values) <= 43200


@pytest.mark.parametrize(("base", "cap"), [(0, 900), (0.4, 900), (30, 0), (1, 1)])
def test_backoff_is_at_least_one_second(base: float, cap: float) -> None:
    assert min(samples(1, base, cap)) >= 1
    assert max(samples(1, base, cap)) <= 1


@pytest.mark.parametrize(
    ("error", "shutting_down", "action", "terminal"),
    [
        (Coded("LEASE_LOST", True), False, Action.LEAVE, None),
        (Coded("ABORTED", True), False, Action.HAND_BACK, None),
        (Coded("DEVICE_LOST", True), False, Action.HAND_BACK, None),
        (Coded("CANCELLED", False), True, Action.HAND_BACK, None),
        (Coded("CANCELLED", False), False, Action.DELETE, Status.CANCELLED),
        (Coded("JOB_TIMEOUT", False), False, Action.DELETE, Status.FAILED),
    ],
    ids=["lease-lost", "aborted", "device-lost", "shutdown", "backend-cancel", "timeout"],
)
def test_one_decision_for_every_way_a_try_ends(
    error: Exception, shutting_down: bool, action: Action, terminal: Status | None
) -> None:
    """Even on the last try: a lost lease is left alone and a shutdown never spends the job's tries."""
    decision = decide(
        error, attempt=3, max_attempts=3, dead_letter=True, base=30, cap=900, shutting_down=shutting_down
    )
    assert (decision.action, decision.terminal) == (action, terminal)


def test_every_coded_error_speaks_the_one_vocabulary() -> None:
    """One base, one enum: no stray string codes in any layer."""
    import media.captions
    import media.fonts  # noqa: F401
    import models.errors  # noqa: F401
    import tasks.errors  # noqa: F401
    import worker.errors
    import worker.notify  # noqa: F401
    from errors import ErrorCode, VidworkerError

    found: list[type[VidworkerError]] = []
    pending = [VidworkerError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    assert len(found) > 30
    for cls in found:
        assert isinstance(cls.code, ErrorCode), cls
        assert isinstance(cls.retryable, bool), cls
    assert issubclass(BadMessage, VidworkerError)
