"""The chaos soak, small: ~20 jobs, 3 workers, kills and faults, a couple of minutes.

Only the invariants are asserted (nothing lost, no output replaced, no
conflicting terminal callbacks, no temp files or ffmpeg left, records that match
their outputs), never counts or timings, so a slow machine cannot fail it. The
seed is random unless ``SOAK_SEED`` is set; a failure names it, and the run dir
with every worker's log is kept. ``make soak`` runs the full one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.soak.chaos import Options, Terminal, as_expected, run
from tests.soak.plan import MAX_BODY, TASK_TYPES, Expected, build, readable_id


@pytest.mark.slow
def test_small_chaos_soak_keeps_every_invariant(tmp_path: Path) -> None:
    seed = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(10**6))
    lines: list[str] = []

    def echo(line: str) -> None:
        print(line)
        lines.append(line)

    options = Options(jobs=20, seed=seed, workers=3, deadline=150, calm=45, root=tmp_path / "soak", keep=True)
    report = run(options, echo=echo)
    assert report.zeros == dict.fromkeys(report.zeros, 0), "\n".join(lines)


def test_the_plan_is_the_seeds_alone() -> None:
    first, again, other = (build(20, seed, "http://backend/cb") for seed in (5, 5, 6))
    assert [m.body for m in first.messages] == [m.body for m in again.messages]
    assert [m.body for m in first.messages] != [m.body for m in other.messages]
    assert min(first.count(task) for task in TASK_TYPES) >= 1
    assert sum(1 for item in first.tracked.values() if item.expect == "COMPLETED") == 20
    assert first.count("hijack:") == 5 and first.untracked


def test_hostile_bodies_are_what_they_claim() -> None:
    plan = build(20, 1, "http://backend/cb")
    bodies = {message.label: message.body for message in plan.messages}
    assert len(bodies["hostile:big-key"].encode()) == len(bodies["hostile:big-noid"].encode()) == MAX_BODY
    assert bodies["hostile:deep-array"].count("[") == 2000
    assert readable_id(bodies["hostile:deep-with-id"]) is None  # past Python's parser depth
    assert readable_id(bodies["hostile:huge-id"]) is None and readable_id(bodies["hostile:nan-id"]) is None
    assert readable_id(bodies["hostile:surrogate-id"]) is None and "\\ud800" in bodies["hostile:surrogate-id"]
    assert readable_id(bodies["hostile:nan-scale"]) == "hx-nan-scale" and "NaN" in bodies["hostile:nan-scale"]
    assert readable_id('{"jobId": 12}') == "12" and readable_id('{"job_id": "a.b-c_d"}') == "a.b-c_d"
    assert readable_id('{"jobId": true}') is None and readable_id('{"jobId": ".x"}') is None


def test_a_completed_job_is_as_expected_and_a_completed_hijack_is_not() -> None:
    valid = Expected("j", "UPSCALE", "COMPLETED")
    hijack = Expected("h", "hijack:output", "INPUT_INVALID")

    def final(status: str, **body: object) -> Terminal:
        return Terminal(status, "e", True, {"status": status, **body})

    assert as_expected(valid, final("COMPLETED"))
    assert as_expected(valid, final("FAILED", retryable=True, errorCode="INTERNAL_ERROR"))
    assert not as_expected(valid, final("FAILED", retryable=False, errorCode="INPUT_INVALID"))
    assert as_expected(hijack, final("FAILED", retryable=False, errorCode="INPUT_INVALID"))
    assert not as_expected(hijack, final("COMPLETED"))
