"""Settings: read once from the environment (spec §8) into a frozen object.

The only module that reads ``os.environ`` for the daemon. Parsing is declared
(pydantic-settings): each field names its variable, ranges are ``ge``/``le``,
comma lists are ``NoDecode`` + a before-validator; load() turns pydantic's
ValidationError into one ConfigError naming each bad variable and its value.

load() reads exactly the mapping it is given (``os.environ`` when None) through
``_Variables``, an EnvSettingsSource over that mapping, then ``model_validate``.
Not through BaseSettings' constructor: its sources are chosen per class, so a
per-call mapping would need global state, and a Settings built in code (tests)
would pick up the process environment. So the class takes only its keyword
arguments; no .env file, secrets directory or command line is ever read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

MAX_JOB_SECONDS = 43200 - 600
"""A job ends (JOB_TIMEOUT) ten minutes before SQS's 12 h visibility cap could hand it to another worker."""


class ConfigError(Exception):
    """The environment does not describe a usable worker; the message names the variable."""


def _items(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _split(value: object) -> object:
    """A comma-separated variable → its non-blank items; a default or keyword argument as it is."""
    return _items(value) if isinstance(value, str) else value


def _queues(queues: tuple[str, ...]) -> tuple[str, ...]:
    queues = tuple(queue.lower() for queue in queues)
    if not queues or set(queues) - {"gpu", "cpu"} or len(set(queues)) != len(queues):
        raise ValueError("expected gpu and/or cpu, each once")
    return queues


def _prefixes(parts: tuple[str, ...]) -> tuple[str, ...]:
    """S3 key prefixes, each ending in ``/``; refused when empty or unsafe."""
    prefixes = tuple(part.strip("/") + "/" for part in parts if part.strip("/"))
    for prefix in prefixes:
        if ".." in prefix.split("/") or "//" in prefix:
            raise ValueError(f"{prefix!r} is not a relative S3 prefix")
    if not prefixes:
        raise ValueError("expected one or more S3 key prefixes")
    return prefixes


def _lower(names: frozenset[str] | None) -> frozenset[str] | None:
    return None if names is None else frozenset(map(str.lower, names))


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("is not an http(s) URL")
    return url


def _model(name: str) -> str:
    from models.registry import MODELS

    if name not in MODELS:
        raise ValueError(f"unknown model; known: {', '.join(MODELS.names())}")
    return name


_Model = Annotated[str, AfterValidator(_model)]
_Names = Annotated[frozenset[str], NoDecode, BeforeValidator(_split), AfterValidator(_lower)]
_Codecs = Annotated[
    frozenset[str] | None, NoDecode, BeforeValidator(lambda v: _split(v) or None), AfterValidator(_lower)
]
_Queues = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split), AfterValidator(_queues)]
_Prefixes = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split), AfterValidator(_prefixes)]
_Prefix = Annotated[str, AfterValidator(lambda prefix: _prefixes(_items(prefix))[0])]
_HttpUrl = Annotated[str, AfterValidator(_http_url)]
_Level = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(str.upper)]
_Format = Annotated[Literal["text", "json"], BeforeValidator(str.lower)]
_REPOSITORY = Path(__file__).resolve().parent.parent
_DAY = 24 * 3600
_WEEK = 7 * _DAY


class Settings(BaseSettings):
    """Everything the daemon is configured with. Durations in seconds, sizes in bytes."""

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, validate_by_name=True, validate_default=True, allow_inf_nan=False
    )

    region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL")
    gpu_queue_url: str | None = Field(None, validation_alias="SQS_GPU_QUEUE_URL")
    cpu_queue_url: str | None = Field(None, validation_alias="SQS_CPU_QUEUE_URL")
    bucket: str = Field("", validation_alias="S3_BUCKET_NAME")
    # validators below: allowed_buckets defaults to {bucket}; callback_allowed_hosts gains the callback's host
    allowed_buckets: _Names = Field(frozenset(), validation_alias="ALLOWED_BUCKETS")
    callback_url: _HttpUrl | None = Field(None, validation_alias="BACKEND_CALLBACK_URL")
    callback_secret: str | None = Field(None, validation_alias="CALLBACK_SECRET", repr=False)
    callback_allowed_hosts: _Names = Field(frozenset(), validation_alias="CALLBACK_ALLOWED_HOSTS")
    callback_allow_private: bool = Field(False, validation_alias="CALLBACK_ALLOW_PRIVATE_NETWORKS")
    callback_timeout: float = Field(10.0, validation_alias="CALLBACK_TIMEOUT_SECONDS", gt=0, le=300)
    weights_dir: Path = Field(_REPOSITORY / "weights", validation_alias="WEIGHTS_DIR")
    weights_mirror: Path | None = Field(None, validation_alias="WEIGHTS_MIRROR")
    weights_offline: bool = Field(False, validation_alias="WEIGHTS_OFFLINE")
    ffmpeg: str = Field("ffmpeg", validation_alias="FFMPEG_PATH")
    ffprobe: str = Field("ffprobe", validation_alias="FFPROBE_PATH")
    queues: _Queues = Field(("cpu",), validation_alias="WORKER_QUEUES")  # load(): the host's configured ones
    drain_seconds: float = Field(300.0, validation_alias="WORKER_DRAIN_SECONDS", ge=0, le=43200)
    tmp_dir: Path = Field(Path("/tmp"), validation_alias="WORKER_TMP_DIR")  # noqa: S108 - jobs get private subdirs
    health_port: int = Field(8090, validation_alias="WORKER_HEALTH_PORT", ge=0, le=65535)
    log_level: _Level = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: _Format = Field("text", validation_alias="LOG_FORMAT")
    wait_seconds: int = Field(20, validation_alias="WORKER_WAIT_SECONDS", ge=0, le=20)
    visibility_timeout: int = Field(300, validation_alias="WORKER_VISIBILITY_TIMEOUT", ge=1, le=43200)
    heartbeat_seconds: float = Field(60.0, validation_alias="WORKER_HEARTBEAT_SECONDS", ge=0.1, le=3600)
    max_attempts: int = Field(3, validation_alias="WORKER_MAX_ATTEMPTS", ge=1, le=100)
    retry_base_seconds: float = Field(30.0, validation_alias="WORKER_RETRY_BASE_SECONDS", ge=0, le=43200)
    retry_max_seconds: float = Field(900.0, validation_alias="WORKER_RETRY_MAX_SECONDS", ge=0, le=43200)
    take_cpu_when_idle: bool = Field(True, validation_alias="WORKER_TAKE_CPU_WHEN_IDLE")
    presign_seconds: int = Field(_WEEK, validation_alias="WORKER_PRESIGN_SECONDS", ge=1, le=_WEEK)
    multipart_threshold: int = 64 * 1024**2  # no variable
    max_source_bytes: int = Field(8 * 1024**3, validation_alias="WORKER_MAX_SOURCE_BYTES", ge=1, le=1024**4)
    jobs_prefix: _Prefix = Field("jobs/", validation_alias="WORKER_JOBS_PREFIX")
    output_prefixes: _Prefixes = Field(("processed/",), validation_alias="OUTPUT_PREFIXES")
    job_timeout: float = Field(6 * 3600.0, validation_alias="WORKER_JOB_TIMEOUT", ge=1, le=MAX_JOB_SECONDS)
    min_free_bytes: int = Field(1024**3, validation_alias="WORKER_MIN_FREE_BYTES", ge=0, le=1024**4)
    dead_letter_watch_seconds: float = Field(60.0, validation_alias="WORKER_DLQ_WATCH_SECONDS", ge=0, le=_DAY)
    outbox_hours: float = Field(72.0, validation_alias="CALLBACK_OUTBOX_HOURS", ge=0, le=24 * 14)
    segment_seconds: float = Field(60.0, validation_alias="WORKER_SEGMENT_SECONDS", ge=0, le=43200)
    cost_factor: float = Field(1.0, validation_alias="WORKER_COST_FACTOR", ge=0, le=1000)
    default_model_gpu: _Model = Field("realesrgan-x4plus", validation_alias="DEFAULT_MODEL_GPU")
    default_model_cpu: _Model = Field("realesr-general-x4v3", validation_alias="DEFAULT_MODEL_CPU")
    runtime: Literal["auto", "torch", "openvino"] = Field("auto", validation_alias="WORKER_RUNTIME")
    reuse: bool = Field(True, validation_alias="WORKER_REUSE")
    ffmpeg_max_address_space: int = Field(
        32 << 30, validation_alias="FFMPEG_MAX_ADDRESS_SPACE_BYTES", ge=0, le=2**50
    )
    ffmpeg_max_file_bytes: int = Field(64 * 1024**3, validation_alias="FFMPEG_MAX_FILE_BYTES", ge=0, le=2**50)
    ffmpeg_max_cpu_seconds: int = Field(_WEEK, validation_alias="FFMPEG_MAX_CPU_SECONDS", ge=0, le=365 * _DAY)
    video_codecs: _Codecs = Field(None, validation_alias="MEDIA_VIDEO_CODECS")  # None: media.probe's list
    # A fleet (deploy/aws): protection from scale-in while a job is in hand, spot and scale-in notices
    fleet: bool = Field(False, validation_alias="WORKER_FLEET")
    autoscaling_group: str | None = Field(None, validation_alias="WORKER_AUTOSCALING_GROUP")
    lifecycle_hook: str | None = Field(None, validation_alias="WORKER_LIFECYCLE_HOOK")
    spot_margin_seconds: float = Field(30.0, validation_alias="WORKER_SPOT_MARGIN_SECONDS", ge=0, le=120)
    metadata_endpoint: _HttpUrl = Field(
        "http://169.254.169.254", validation_alias="AWS_EC2_METADATA_SERVICE_ENDPOINT"
    )
    callback_secret_parameter: str | None = Field(None, validation_alias="CALLBACK_SECRET_PARAMETER")

    @field_validator("allowed_buckets")
    @classmethod
    def _default_to_the_bucket(cls, buckets: frozenset[str], info: ValidationInfo) -> frozenset[str]:
        bucket = info.data.get("bucket")
        return buckets or (frozenset({bucket.lower()}) if bucket else buckets)

    @field_validator("callback_allowed_hosts")
    @classmethod
    def _with_the_callback_host(cls, hosts: frozenset[str], info: ValidationInfo) -> frozenset[str]:
        url = info.data.get("callback_url")
        return hosts | {str(urlsplit(url).hostname)} if url else hosts  # hostname: lower case, present

    def queue_url(self, name: str) -> str:
        url = self.gpu_queue_url if name == "gpu" else self.cpu_queue_url
        if url is None:
            raise ConfigError(f"WORKER_QUEUES names {name} but SQS_{name.upper()}_QUEUE_URL is not set")
        return url

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, *_: Any, **__: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Built in code, Settings takes its keyword arguments only; load() reads variables."""
        return (init_settings,)


class _Variables(EnvSettingsSource):
    """The variables of ``env``, stripped, blank ones unset; looked up by alias only, never by field name."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        values = ((name, value.strip()) for name, value in self._env.items())
        return {name: value for name, value in values if value}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value, key, complex_ = super().get_field_value(field, field_name)
        return (None if key == field_name else value), key, complex_


_PROBLEMS = {
    "int_parsing": "is not an integer",
    "float_parsing": "is not a number",
    "finite_number": "is not a number",
    "bool_parsing": "is not a boolean (true/false)",
    "greater_than_equal": "is below the minimum {ge:g}",
    "less_than_equal": "is above the maximum {le:g}",
    "literal_error": "expected {expected}",
    "value_error": "{error}",
}


def _message(error: ErrorDetails, found: Mapping[str, Any]) -> str:
    """``VARIABLE='value' is not a number``, or ``VARIABLE='value': expected ...``."""
    name = str(error["loc"][0]) if error["loc"] else "?"
    template = _PROBLEMS.get(error["type"])
    problem = template.format(**error.get("ctx", {})) if template else error["msg"]
    return f"{name}={found.get(name, error['input'])!r}{' ' if problem.startswith('is ') else ': '}{problem}"


def load(env: Mapping[str, str] | None = None, *, cuda: bool = False) -> Settings:
    """Settings from ``env`` (default ``os.environ``); ``cuda``: this host has a usable GPU."""
    found = _Variables(os.environ if env is None else env)()
    if not found.keys() & {"SQS_GPU_QUEUE_URL", "SQS_CPU_QUEUE_URL"}:
        raise ConfigError("set SQS_GPU_QUEUE_URL and/or SQS_CPU_QUEUE_URL")
    if "S3_BUCKET_NAME" not in found:
        raise ConfigError("S3_BUCKET_NAME is not set")
    if "WORKER_QUEUES" not in found:  # the default: the host's queues that are configured
        host = ("gpu", "cpu") if cuda else ("cpu",)
        found["WORKER_QUEUES"] = tuple(q for q in host if f"SQS_{q.upper()}_QUEUE_URL" in found) or host
    try:
        settings = Settings.model_validate(found)
    except ValidationError as error:
        raise ConfigError("; ".join(_message(detail, found) for detail in error.errors())) from None
    for queue in settings.queues:
        settings.queue_url(queue)
    if any(settings.jobs_prefix.startswith(prefix) or prefix.startswith(settings.jobs_prefix)
           for prefix in settings.output_prefixes):  # fmt: skip
        raise ConfigError("WORKER_JOBS_PREFIX must not overlap OUTPUT_PREFIXES")
    if settings.callback_secret and settings.callback_secret_parameter:
        raise ConfigError("set CALLBACK_SECRET or CALLBACK_SECRET_PARAMETER, not both")
    if settings.heartbeat_seconds >= settings.visibility_timeout:
        raise ConfigError("WORKER_HEARTBEAT_SECONDS must be below WORKER_VISIBILITY_TIMEOUT")
    return settings
