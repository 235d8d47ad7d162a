"""Any message body decodes to a job or to BadMessage: nothing else escapes (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.message import BadMessage, Job, decode

FIELDS = ["jobId", "taskType", "sourceS3Key", "outputS3Key", "callbackUrl", "parameters", "userId", "job_id"]
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def decoded_or_refused(body: str) -> Job | BadMessage:
    try:
        return decode(body)
    except BadMessage as error:
        if error.job_id is not None:
            error.job_id.encode()  # whatever is answered to must be sendable
            assert 0 < len(error.job_id) <= 128
        return error


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text(body: str) -> None:
    decoded_or_refused(body)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), values, max_size=8))
def test_any_object_with_job_fields(raw: dict[str, Any]) -> None:
    decoded_or_refused(json.dumps(raw, allow_nan=True))


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=100_000), st.sampled_from(["[", '{"a":', '{"jobId":[']))
def test_deep_nesting(depth: int, opener: str) -> None:
    assert isinstance(decoded_or_refused(opener * depth), BadMessage)


def test_the_parsers_own_limits_are_bad_messages() -> None:
    for body in ("[" * 5000 + "]" * 5000, '{"jobId": ' + "9" * 5000 + "}", '{"jobId": "\\ud800"}', "\x00"):
        assert isinstance(decoded_or_refused(body), BadMessage)
    surrogate = '{"jobId": "j1", "taskType": "CAPTION_RENDER", "sourceS3Key": "a.mp4", "parameters": '
    surrogate += '{"scenario": {"cues": [{"start": 0, "end": 1, "text": "\\ud800"}]}}}'
    refused = decoded_or_refused(surrogate)
    assert isinstance(refused, BadMessage) and refused.job_id == "j1" and "surrogate" in str(refused)
    huge = decoded_or_refused(json.dumps({"jobId": 10**400, "taskType": 1}))
    assert isinstance(huge, BadMessage) and huge.job_id is None
