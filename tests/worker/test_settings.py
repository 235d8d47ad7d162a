"""Settings from an environment mapping (spec §8): defaults, and one ConfigError per misconfiguration."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.settings import ConfigError, Settings, load

CPU_URL = "http://sqs.local/000000000000/cpu"
GPU_URL = "http://sqs.local/000000000000/gpu"
MINIMAL = {"SQS_CPU_QUEUE_URL": CPU_URL, "S3_BUCKET_NAME": "Videos"}


def env(**extra: str) -> dict[str, str]:
    return {**MINIMAL, **extra}


def test_minimal_environment_gives_the_documented_defaults() -> None:
    settings = load(MINIMAL, cuda=False)
    assert settings.cpu_queue_url == CPU_URL
    assert settings.gpu_queue_url is None
    assert settings.queues == ("cpu",)
    assert settings.bucket == "Videos"
    assert settings.allowed_buckets == frozenset({"videos"})
    assert settings.region == "us-east-1"
    assert settings.endpoint_url is None
    assert settings.callback_url is None
    assert settings.callback_secret is None
    assert settings.callback_allowed_hosts == frozenset()
    assert settings.callback_allow_private is False
    assert settings.weights_mirror is None
    assert settings.weights_offline is False
    assert settings.health_port == 8090
    assert settings.drain_seconds == 300
    assert settings.tmp_dir == Path("/tmp")
    assert (settings.log_level, settings.log_format) == ("INFO", "text")
    assert settings.heartbeat_seconds < settings.visibility_timeout
    assert settings.queue_url("cpu") == CPU_URL
    assert (settings.runtime, settings.reuse) == ("auto", True)


def test_runtime_and_reuse_are_read_and_checked() -> None:
    settings = load(env(WORKER_RUNTIME="openvino", WORKER_REUSE="0"), cuda=False)
    assert (settings.runtime, settings.reuse) == ("openvino", False)
    with pytest.raises(ConfigError, match="WORKER_RUNTIME"):
        load(env(WORKER_RUNTIME="tensorrt"), cuda=False)


def test_load_does_not_read_os_environ_when_given_a_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("WORKER_QUEUES", "tpu")
    assert load(MINIMAL).queues == ("cpu",)


def test_cuda_host_with_both_queues_serves_gpu_first() -> None:
    settings = load(env(SQS_GPU_QUEUE_URL=GPU_URL), cuda=True)
    assert settings.queues == ("gpu", "cpu")
    assert settings.queue_url("gpu") == GPU_URL


def test_cuda_host_without_a_gpu_queue_serves_cpu_only() -> None:
    assert load(MINIMAL, cuda=True).queues == ("cpu",)


def test_cpu_host_with_both_queue_urls_serves_cpu_only() -> None:
    assert load(env(SQS_GPU_QUEUE_URL=GPU_URL), cuda=False).queues == ("cpu",)


def test_cuda_host_with_only_the_gpu_queue_serves_gpu() -> None:
    settings = load({"SQS_GPU_QUEUE_URL": GPU_URL, "S3_BUCKET_NAME": "b"}, cuda=True)
    assert settings.queues == ("gpu",)


def test_gpu_queue_alone_with_explicit_worker_queues() -> None:
    settings = load({"SQS_GPU_QUEUE_URL": GPU_URL, "S3_BUCKET_NAME": "b", "WORKER_QUEUES": "gpu"}, cuda=True)
    assert settings.queues == ("gpu",)


def test_cpu_host_with_only_the_gpu_queue_names_the_missing_cpu_url() -> None:
    with pytest.raises(ConfigError, match="SQS_CPU_QUEUE_URL"):
        load({"SQS_GPU_QUEUE_URL": GPU_URL, "S3_BUCKET_NAME": "b"}, cuda=False)


def test_explicit_worker_queues_keep_their_order() -> None:
    settings = load(env(SQS_GPU_QUEUE_URL=GPU_URL, WORKER_QUEUES=" CPU , gpu "), cuda=False)
    assert settings.queues == ("cpu", "gpu")


def test_allowed_buckets_are_parsed_lowercased() -> None:
    settings = load(env(ALLOWED_BUCKETS="Videos, Other-Bucket,,"))
    assert settings.allowed_buckets == frozenset({"videos", "other-bucket"})


def test_callback_host_is_allowed_in_addition_to_the_listed_hosts() -> None:
    settings = load(
        env(
            BACKEND_CALLBACK_URL="https://Backend.Example:8443/api/jobs/callback",
            CALLBACK_ALLOWED_HOSTS="Hooks.example",
        )
    )
    assert settings.callback_url == "https://Backend.Example:8443/api/jobs/callback"
    assert settings.callback_allowed_hosts == frozenset({"backend.example", "hooks.example"})


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("YES", True), ("1", True), ("off", False)])
def test_boolean_spellings(value: str, expected: bool) -> None:
    assert load(env(CALLBACK_ALLOW_PRIVATE_NETWORKS=value)).callback_allow_private is expected


def test_tuning_values_are_read() -> None:
    settings = load(
        env(
            AWS_REGION="eu-west-1",
            AWS_ENDPOINT_URL="http://127.0.0.1:4566",
            WORKER_DRAIN_SECONDS="12.5",
            WORKER_HEALTH_PORT="0",
            WORKER_VISIBILITY_TIMEOUT="30",
            WORKER_HEARTBEAT_SECONDS="10",
            LOG_LEVEL="debug",
            LOG_FORMAT="JSON",
            WEIGHTS_MIRROR="/srv/mirror",
            WEIGHTS_DIR="/srv/weights",
            WORKER_TMP_DIR="/var/tmp/vid",
        )
    )
    assert settings.region == "eu-west-1"
    assert settings.endpoint_url == "http://127.0.0.1:4566"
    assert settings.drain_seconds == 12.5
    assert settings.health_port == 0
    assert (settings.visibility_timeout, settings.heartbeat_seconds) == (30, 10)
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert settings.weights_mirror == Path("/srv/mirror")
    assert settings.weights_dir == Path("/srv/weights")
    assert settings.tmp_dir == Path("/var/tmp/vid")


@pytest.mark.parametrize(
    ("environment", "variable"),
    [
        ({"S3_BUCKET_NAME": "b"}, "SQS_CPU_QUEUE_URL"),
        ({"S3_BUCKET_NAME": "b", "SQS_CPU_QUEUE_URL": "  "}, "SQS_GPU_QUEUE_URL"),
        ({"SQS_CPU_QUEUE_URL": CPU_URL}, "S3_BUCKET_NAME"),
        (env(S3_BUCKET_NAME=" "), "S3_BUCKET_NAME"),
        (env(WORKER_QUEUES="gpu"), "SQS_GPU_QUEUE_URL"),
        (env(WORKER_QUEUES="tpu"), "WORKER_QUEUES"),
        (env(WORKER_QUEUES="cpu,cpu"), "WORKER_QUEUES"),
        (env(LOG_FORMAT="xml"), "LOG_FORMAT"),
        (env(LOG_LEVEL="LOUD"), "LOG_LEVEL"),
        (env(CALLBACK_ALLOW_PRIVATE_NETWORKS="maybe"), "CALLBACK_ALLOW_PRIVATE_NETWORKS"),
        (env(WEIGHTS_OFFLINE="2"), "WEIGHTS_OFFLINE"),
        (env(WORKER_TAKE_CPU_WHEN_IDLE="nope"), "WORKER_TAKE_CPU_WHEN_IDLE"),
        (env(WORKER_DRAIN_SECONDS="five"), "WORKER_DRAIN_SECONDS"),
        (env(WORKER_DRAIN_SECONDS="-1"), "WORKER_DRAIN_SECONDS"),
        (env(WORKER_DRAIN_SECONDS="86400"), "WORKER_DRAIN_SECONDS"),
        (env(WORKER_DRAIN_SECONDS="nan"), "WORKER_DRAIN_SECONDS"),
        (env(WORKER_HEALTH_PORT="http"), "WORKER_HEALTH_PORT"),
        (env(WORKER_HEALTH_PORT="65536"), "WORKER_HEALTH_PORT"),
        (env(WORKER_HEALTH_PORT="-80"), "WORKER_HEALTH_PORT"),
        (env(BACKEND_CALLBACK_URL="ftp://x"), "BACKEND_CALLBACK_URL"),
        (env(BACKEND_CALLBACK_URL="https://"), "BACKEND_CALLBACK_URL"),
        (env(WORKER_HEARTBEAT_SECONDS="300"), "WORKER_HEARTBEAT_SECONDS"),
        (env(WORKER_VISIBILITY_TIMEOUT="30", WORKER_HEARTBEAT_SECONDS="45"), "WORKER_VISIBILITY_TIMEOUT"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_misconfiguration_names_the_variable(environment: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load(environment, cuda=False)


def test_secret_is_kept_out_of_repr() -> None:
    settings = load(env(CALLBACK_SECRET="hunter2-very-secret"))
    assert settings.callback_secret == "hunter2-very-secret"
    assert "hunter2-very-secret" not in repr(settings)
    assert "hunter2-very-secret" not in str(settings)


def test_settings_are_frozen() -> None:
    settings = load(MINIMAL)
    with pytest.raises(ValidationError, match="frozen"):
        settings.bucket = "elsewhere"  # type: ignore[misc]


def test_queue_url_of_an_unconfigured_queue_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SQS_GPU_QUEUE_URL"):
        Settings(cpu_queue_url=CPU_URL).queue_url("gpu")


def test_job_state_output_prefixes_deadline_and_limits() -> None:
    settings = load(MINIMAL, cuda=False)
    assert (settings.jobs_prefix, settings.output_prefixes) == ("jobs/", ("processed/",))
    assert 0 < settings.job_timeout <= 43200 - 600
    given = env(OUTPUT_PREFIXES="exports, processed/", WORKER_JOBS_PREFIX="state", WORKER_JOB_TIMEOUT="60",
                MEDIA_VIDEO_CODECS="h264,FFV1", FFMPEG_MAX_FILE_BYTES="0")  # fmt: skip
    custom = load(given, cuda=False)
    assert custom.output_prefixes == ("exports/", "processed/") and custom.jobs_prefix == "state/"
    assert custom.job_timeout == 60 and custom.video_codecs == frozenset({"h264", "ffv1"})
    assert custom.ffmpeg_max_file_bytes == 0


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("WORKER_JOB_TIMEOUT", "43200", "WORKER_JOB_TIMEOUT"),  # would pass SQS's 12 h cap
        ("OUTPUT_PREFIXES", "../up", "OUTPUT_PREFIXES"),
        ("WORKER_JOBS_PREFIX", "processed/jobs", "WORKER_JOBS_PREFIX"),  # overlaps the outputs
    ],
)
def test_unsafe_state_settings_are_refused(name: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(env(**{name: value}), cuda=False)


def test_load_without_a_mapping_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in env(LOG_LEVEL="warning", WORKER_QUEUES="cpu").items():
        monkeypatch.setenv(name, value)
    settings = load()
    assert (settings.cpu_queue_url, settings.bucket, settings.log_level) == (CPU_URL, "Videos", "WARNING")


def test_only_the_documented_variables_are_read() -> None:
    settings = load(env(bucket="elsewhere", multipart_threshold="5", S3_BUCKET_NAME=" Videos "))
    assert settings.bucket == "Videos" and settings.multipart_threshold == 64 * 1024**2


def test_every_bad_variable_is_named_with_its_value() -> None:
    with pytest.raises(ConfigError) as raised:
        load(env(WORKER_VISIBILITY_TIMEOUT="x", WORKER_DRAIN_SECONDS="-1", OUTPUT_PREFIXES="../up"))
    assert str(raised.value) == (
        "WORKER_DRAIN_SECONDS='-1' is below the minimum 0; "
        "WORKER_VISIBILITY_TIMEOUT='x' is not an integer; "
        "OUTPUT_PREFIXES='../up': '../up/' is not a relative S3 prefix"
    )


def test_callback_timeout() -> None:
    assert load(MINIMAL, cuda=False).callback_timeout == 10
    assert load(env(CALLBACK_TIMEOUT_SECONDS="1.5"), cuda=False).callback_timeout == 1.5
    with pytest.raises(ConfigError, match="CALLBACK_TIMEOUT_SECONDS"):
        load(env(CALLBACK_TIMEOUT_SECONDS="0"), cuda=False)


def test_default_model_per_tier() -> None:
    settings = load(MINIMAL, cuda=False)
    assert (settings.default_model_gpu, settings.default_model_cpu) == (
        "realesrgan-x4plus",
        "realesr-general-x4v3",
    )
    assert (
        load(env(DEFAULT_MODEL_CPU="realesr-animevideov3"), cuda=False).default_model_cpu
        == "realesr-animevideov3"
    )
    with pytest.raises(ConfigError, match="DEFAULT_MODEL_GPU"):
        load(env(DEFAULT_MODEL_GPU="esrgan-9000"), cuda=False)
