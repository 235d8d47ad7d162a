"""Settings: read once from the environment (spec §8) into a frozen object.

This is the only module that reads ``os.environ`` for the daemon. A bad value
fails at start with one message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

MAX_JOB_SECONDS = 43200 - 600
"""A job ends (JOB_TIMEOUT) ten minutes before SQS's 12 h visibility cap could hand it to another worker."""


class ConfigError(Exception):
    """The environment does not describe a usable worker; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the daemon is configured with. Durations in seconds, sizes in bytes."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    gpu_queue_url: str | None = None
    cpu_queue_url: str | None = None
    bucket: str = ""
    allowed_buckets: frozenset[str] = frozenset()
    callback_url: str | None = None
    callback_secret: str | None = field(default=None, repr=False)
    callback_allowed_hosts: frozenset[str] = frozenset()
    callback_allow_private: bool = False
    weights_dir: Path = Path(__file__).resolve().parent.parent / "weights"
    weights_mirror: Path | None = None
    weights_offline: bool = False
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    queues: tuple[str, ...] = ("cpu",)
    drain_seconds: float = 300.0
    tmp_dir: Path = Path("/tmp")  # noqa: S108 - the default of WORKER_TMP_DIR; jobs get private subdirs
    health_port: int = 8090
    log_level: str = "INFO"
    log_format: str = "text"
    wait_seconds: int = 20
    visibility_timeout: int = 300
    heartbeat_seconds: float = 60.0
    max_attempts: int = 3
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 900.0
    take_cpu_when_idle: bool = True
    presign_seconds: int = 7 * 24 * 3600
    multipart_threshold: int = 64 * 1024**2
    max_source_bytes: int = 8 * 1024**3
    jobs_prefix: str = "jobs/"
    output_prefixes: tuple[str, ...] = ("processed/",)
    job_timeout: float = 6 * 3600.0
    min_free_bytes: int = 1024**3
    dead_letter_watch_seconds: float = 60.0
    outbox_hours: float = 72.0
    ffmpeg_max_address_space: int = 32 * 1024**3
    ffmpeg_max_file_bytes: int = 64 * 1024**3
    ffmpeg_max_cpu_seconds: int = 7 * 24 * 3600
    video_codecs: frozenset[str] | None = None  # None: the reviewed list in media.probe

    def queue_url(self, name: str) -> str:
        url = self.gpu_queue_url if name == "gpu" else self.cpu_queue_url
        if url is None:
            raise ConfigError(f"WORKER_QUEUES names {name} but SQS_{name.upper()}_QUEUE_URL is not set")
        return url


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _text(env, name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (true/false)")


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    value = _text(env, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}={value!r} is outside {low:g}..{high:g}")
    return number


def _names(env: Mapping[str, str], name: str) -> frozenset[str]:
    return frozenset(part.strip().lower() for part in (env.get(name) or "").split(",") if part.strip())


def _queues(env: Mapping[str, str], cuda: bool) -> tuple[str, ...]:
    value = _text(env, "WORKER_QUEUES")
    queues = tuple(part.strip().lower() for part in value.split(",") if part.strip()) if value else ()
    if not queues:
        queues = ("gpu", "cpu") if cuda else ("cpu",)
    unknown = [queue for queue in queues if queue not in ("gpu", "cpu")]
    if unknown or len(set(queues)) != len(queues):
        raise ConfigError(f"WORKER_QUEUES={value!r}: expected gpu and/or cpu, each once")
    return queues


def _prefixes(env: Mapping[str, str], name: str, default: str) -> tuple[str, ...]:
    """Comma-separated S3 key prefixes, each ending in ``/``; refused when empty or unsafe."""
    value = _text(env, name) or default
    prefixes = tuple(part.strip().strip("/") + "/" for part in value.split(",") if part.strip().strip("/"))
    for prefix in prefixes:
        if prefix.startswith("/") or ".." in prefix.split("/") or "//" in prefix:
            raise ConfigError(f"{name}={value!r}: {prefix!r} is not a relative S3 prefix")
    if not prefixes:
        raise ConfigError(f"{name}={value!r}: expected one or more S3 key prefixes")
    return prefixes


def load(env: Mapping[str, str] | None = None, *, cuda: bool = False) -> Settings:
    """Settings from ``env`` (default ``os.environ``); ``cuda``: this host has a usable GPU."""
    env = os.environ if env is None else env
    gpu_url, cpu_url = _text(env, "SQS_GPU_QUEUE_URL"), _text(env, "SQS_CPU_QUEUE_URL")
    if gpu_url is None and cpu_url is None:
        raise ConfigError("set SQS_GPU_QUEUE_URL and/or SQS_CPU_QUEUE_URL")
    bucket = _text(env, "S3_BUCKET_NAME")
    if bucket is None:
        raise ConfigError("S3_BUCKET_NAME is not set")
    callback = _text(env, "BACKEND_CALLBACK_URL")
    allowed_hosts = _names(env, "CALLBACK_ALLOWED_HOSTS")
    if callback is not None:
        parts = urlsplit(callback)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"BACKEND_CALLBACK_URL={callback!r} is not an http(s) URL")
        allowed_hosts |= {parts.hostname.lower()}
    queues = _queues(env, cuda)
    if _text(env, "WORKER_QUEUES") is None:  # the default: the host's queues that are configured
        urls = {"gpu": gpu_url, "cpu": cpu_url}
        queues = tuple(queue for queue in queues if urls[queue] is not None) or queues
    log_format = (_text(env, "LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT={log_format!r}: expected text or json")
    mirror = _text(env, "WEIGHTS_MIRROR")
    settings = Settings(
        region=_text(env, "AWS_REGION") or _text(env, "AWS_DEFAULT_REGION") or "us-east-1",
        endpoint_url=_text(env, "AWS_ENDPOINT_URL"),
        gpu_queue_url=gpu_url,
        cpu_queue_url=cpu_url,
        bucket=bucket,
        allowed_buckets=_names(env, "ALLOWED_BUCKETS") or frozenset({bucket.lower()}),
        callback_url=callback,
        callback_secret=_text(env, "CALLBACK_SECRET"),
        callback_allowed_hosts=allowed_hosts,
        callback_allow_private=_flag(env, "CALLBACK_ALLOW_PRIVATE_NETWORKS", False),
        weights_dir=Path(_text(env, "WEIGHTS_DIR") or Settings.weights_dir),
        weights_mirror=Path(mirror) if mirror else None,
        weights_offline=_flag(env, "WEIGHTS_OFFLINE", False),
        ffmpeg=_text(env, "FFMPEG_PATH") or "ffmpeg",
        ffprobe=_text(env, "FFPROBE_PATH") or "ffprobe",
        queues=queues,
        drain_seconds=_number(env, "WORKER_DRAIN_SECONDS", 300, 0, 43200),
        tmp_dir=Path(_text(env, "WORKER_TMP_DIR") or "/tmp"),  # noqa: S108
        health_port=int(_number(env, "WORKER_HEALTH_PORT", 8090, 0, 65535)),
        log_level=(_text(env, "LOG_LEVEL") or "INFO").upper(),
        log_format=log_format,
        wait_seconds=int(_number(env, "WORKER_WAIT_SECONDS", 20, 0, 20)),
        visibility_timeout=int(_number(env, "WORKER_VISIBILITY_TIMEOUT", 300, 1, 43200)),
        heartbeat_seconds=_number(env, "WORKER_HEARTBEAT_SECONDS", 60, 0.1, 3600),
        max_attempts=int(_number(env, "WORKER_MAX_ATTEMPTS", 3, 1, 100)),
        retry_base_seconds=_number(env, "WORKER_RETRY_BASE_SECONDS", 30, 0, 43200),
        retry_max_seconds=_number(env, "WORKER_RETRY_MAX_SECONDS", 900, 0, 43200),
        take_cpu_when_idle=_flag(env, "WORKER_TAKE_CPU_WHEN_IDLE", True),
        presign_seconds=int(_number(env, "WORKER_PRESIGN_SECONDS", 7 * 24 * 3600, 1, 7 * 24 * 3600)),
        max_source_bytes=int(_number(env, "WORKER_MAX_SOURCE_BYTES", 8 * 1024**3, 1, 1024**4)),
        jobs_prefix=_prefixes(env, "WORKER_JOBS_PREFIX", "jobs/")[0],
        output_prefixes=_prefixes(env, "OUTPUT_PREFIXES", "processed/"),
        job_timeout=_number(env, "WORKER_JOB_TIMEOUT", 6 * 3600, 1, MAX_JOB_SECONDS),
        min_free_bytes=int(_number(env, "WORKER_MIN_FREE_BYTES", 1024**3, 0, 1024**4)),
        dead_letter_watch_seconds=_number(env, "WORKER_DLQ_WATCH_SECONDS", 60, 0, 86400),
        outbox_hours=_number(env, "CALLBACK_OUTBOX_HOURS", 72, 0, 24 * 14),
        ffmpeg_max_address_space=int(_number(env, "FFMPEG_MAX_ADDRESS_SPACE_BYTES", 32 * 1024**3, 0, 2**50)),
        ffmpeg_max_file_bytes=int(_number(env, "FFMPEG_MAX_FILE_BYTES", 64 * 1024**3, 0, 2**50)),
        ffmpeg_max_cpu_seconds=int(_number(env, "FFMPEG_MAX_CPU_SECONDS", 7 * 24 * 3600, 0, 365 * 86400)),
        video_codecs=_names(env, "MEDIA_VIDEO_CODECS") or None,
    )
    for queue in settings.queues:
        settings.queue_url(queue)
    if settings.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL={settings.log_level!r}: expected DEBUG, INFO, WARNING or ERROR")
    if any(settings.jobs_prefix.startswith(prefix) or prefix.startswith(settings.jobs_prefix)
           for prefix in settings.output_prefixes):  # fmt: skip
        raise ConfigError("WORKER_JOBS_PREFIX must not overlap OUTPUT_PREFIXES")
    if settings.heartbeat_seconds >= settings.visibility_timeout:
        raise ConfigError("WORKER_HEARTBEAT_SECONDS must be below WORKER_VISIBILITY_TIMEOUT")
    return settings
