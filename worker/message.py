"""The job message Spring enqueues (spec §3) and the callback bodies we send back (spec §6)."""

from __future__ import annotations

import json
import posixpath
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from errors import ErrorCode, VidworkerError


class Status(StrEnum):
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class BadMessage(VidworkerError):
    """The message cannot become a job; permanent. ``job_id`` is set when it could be read."""

    code = ErrorCode.INPUT_INVALID
    retryable = False

    def __init__(self, message: str, *, job_id: str | None = None, callback_url: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.callback_url = callback_url


def _both(name: str) -> AliasChoices:
    """Accept ``name`` in snake_case and in Jackson's camelCase."""
    return AliasChoices(to_camel(name), name)  # camelCase first: errors name Spring's spelling


def safe_id(value: str) -> bool:
    """Whether ``value`` may name a job (and so an S3 prefix): 1-128 ASCII letters, digits, ``-_.``."""
    return (
        0 < len(value) <= 128
        and value.isascii()
        and all(ch.isalnum() or ch in "-_." for ch in value)
        and not value.startswith(".")
    )


def check_key(value: str) -> str:
    """``value`` if it is a safe S3 key: relative, no ``..`` or empty segments, at most 1024 bytes."""
    parts = value.split("/")
    if value.startswith("/") or ".." in parts or "" in parts[:-1] or not parts[-1] or "\x00" in value:
        raise ValueError("must be a relative S3 key without '..' or empty segments")
    if len(value.encode()) > 1024:
        raise ValueError("is longer than 1024 bytes")
    return value


class Stage(BaseModel):
    """A split job's part this message asks for: one segment (``index``) or the merge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Literal["segment", "merge"]
    index: int | None = Field(None, ge=0, le=99_999)


class Job(BaseModel):
    """One decoded message. Unknown top-level fields (``status``…) are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=False)

    job_id: str = Field(validation_alias=_both("job_id"), min_length=1, max_length=128)
    user_id: str | None = Field(None, validation_alias=_both("user_id"))
    task_type: str = Field(validation_alias=_both("task_type"), min_length=1, max_length=64)
    source_s3_key: str = Field(validation_alias=AliasChoices("sourceS3Key", "source_s3_key"), min_length=1)
    source_bucket: str | None = Field(None, validation_alias=_both("source_bucket"))
    output_s3_key: str | None = Field(None, validation_alias=AliasChoices("outputS3Key", "output_s3_key"))
    callback_url: str | None = Field(None, validation_alias=_both("callback_url"), max_length=2048)
    parameters: dict[str, Any] = Field(default_factory=dict)
    stage: Stage | None = Field(None, validation_alias="vidworker")
    """Set on the worker's own segment and merge messages of a split job (``worker.segments``)."""

    @field_validator("job_id", "user_id", mode="before")
    @classmethod
    def _id_text(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("must be a string or a number")
        return str(value) if isinstance(value, int) else value

    @field_validator("job_id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not safe_id(value):
            raise ValueError("may hold only letters, digits, '-', '_' and '.', not first")
        return value

    @field_validator("source_s3_key", "output_s3_key")
    @classmethod
    def _safe_key(cls, value: str | None) -> str | None:
        return None if value is None else check_key(value)

    @property
    def stem(self) -> str:
        """The source file name without its extension, for default output names."""
        name = posixpath.basename(self.source_s3_key)
        return name.rsplit(".", 1)[0] if "." in name[1:] else name


def problems(error: ValidationError, root: str) -> str:
    """One line naming each invalid field (``root`` for the object itself) and why.

    (As ``tasks.base.problems``; kept here so that handling messages does not import torch.)
    """
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or root}: {item['msg']}" for item in error.errors()
    )


def decode(body: str) -> Job:
    """A message body → :class:`Job`, or :class:`BadMessage` with what could be recovered.

    Nothing else escapes: a body that breaks the parser itself (nested past the
    recursion limit, digits past the int limit) is a bad message like any other.
    """
    try:
        return _decode(body)
    except BadMessage:
        raise
    except Exception as error:  # RecursionError, MemoryError-free parser faults, validator bugs
        raise BadMessage(f"message body cannot be read: {type(error).__name__}: {str(error)[:200]}") from None


def _decode(body: str) -> Job:
    try:
        raw = json.loads(body)
    except ValueError as error:
        raise BadMessage(f"message body is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise BadMessage("message body is not a JSON object")
    try:
        json.dumps(raw, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # "\ud800" is valid JSON but no text: no file, filter or callback can hold it
        raise BadMessage(
            "message holds text that is not Unicode (a lone surrogate escape)",
            job_id=_readable_id(raw.get("jobId", raw.get("job_id"))),
        ) from None
    try:
        return Job.model_validate(raw)
    except ValidationError as error:
        job_id = raw.get("jobId", raw.get("job_id"))
        callback = raw.get("callbackUrl", raw.get("callback_url"))
        raise BadMessage(
            f"invalid job message: {problems(error, 'message')}",
            job_id=_readable_id(job_id),
            callback_url=callback if isinstance(callback, str) and len(callback) <= 2048 else None,
        ) from None


def _readable_id(value: object) -> str | None:
    """A job id worth answering to: a short string or integer, else None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = value if isinstance(value, str) else str(value) if abs(value) < 10**128 else ""
    if not 0 < len(text) <= 128 or not text.isprintable():
        return None
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: no callback body could carry it
        return None
    return text


class Metadata(BaseModel):
    """``metadata`` of a COMPLETED callback."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    audio: bool
    device: str
    model: str | None
    encoder: str
    processing_seconds: float
    warnings: list[str] = []
    runtime: str | None = None
    frames_reused: int | None = None
    skip_rate: float | None = None


class Callback(BaseModel):
    """The JSON body POSTed to the backend (spec §6); ``None`` fields are left out."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    job_id: str
    status: Status
    progress: int = Field(0, ge=0, le=100)
    message: str = ""
    timestamp: str = Field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    output_bucket: str | None = None
    output_s3_key: str | None = Field(None, alias="outputS3Key")
    download_url: str | None = None
    file_size: int | None = None
    sha256: str | None = None
    duration: float | None = None
    metadata: Metadata | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool | None = None
    attempt: int = 1

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def schemas() -> dict[str, Any]:
    """JSON Schemas of the job message (as the backend sends it) and the callback body."""
    job = Job.model_json_schema(mode="validation")
    job["properties"].pop("vidworker", None)  # the worker's own stage messages, not the backend's
    job.get("$defs", {}).pop("Stage", None)
    return {"job": job, "callback": Callback.model_json_schema(mode="serialization", by_alias=True)}
