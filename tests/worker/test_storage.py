"""S3 through moto's server: keys, the bucket allowlist, download/upload, result.json and presigned links."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config

from tests.worker.harness import FaultProxy
from worker.embedded import CREDENTIALS, REGION, EmbeddedAWS
from worker.errors import (
    BucketNotAllowed,
    DiskFull,
    OutputTaken,
    SourceNotFound,
    SourceTooLarge,
    StorageUnavailable,
    TransferAborted,
)
from worker.storage import JOB_STAMP, SHA_STAMP, Storage

MiB = 1024**2


@pytest.fixture
def bucket(moto_server: EmbeddedAWS) -> str:
    name = f"st-{uuid.uuid4().hex[:12]}"
    moto_server.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(moto_server: EmbeddedAWS) -> Any:
    return moto_server.client("s3")


@pytest.fixture
def storage(s3: Any, bucket: str) -> Storage:
    return Storage(
        s3, bucket=bucket, allowed_buckets=frozenset({bucket, "archive"}), multipart_threshold=5 * MiB
    )


def quick_client(endpoint: str) -> Any:
    """An S3 client that gives up at once: one attempt, one-second timeouts."""
    return boto3.session.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    ).client(
        "s3",
        endpoint_url=endpoint,
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"}),
    )


def test_source_bucket_allowlist(storage: Storage, bucket: str) -> None:
    assert storage.source_bucket(None) == bucket
    assert storage.source_bucket("") == bucket
    assert storage.source_bucket("archive") == "archive"
    assert storage.source_bucket("ARCHIVE") == "ARCHIVE"
    with pytest.raises(BucketNotAllowed, match="other-bucket") as caught:
        storage.source_bucket("other-bucket")
    assert (caught.value.code, caught.value.retryable) == ("INPUT_INVALID", False)


def test_download_round_trip(storage: Storage, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(4096)
    s3.put_object(Bucket=bucket, Key="uploads/u1/clip.mp4", Body=data)
    target = tmp_path / "source"
    assert storage.download(bucket, "uploads/u1/clip.mp4", target) == len(data)
    assert target.read_bytes() == data


@pytest.mark.parametrize("missing", ["key", "bucket"])
def test_download_of_a_missing_source(storage: Storage, bucket: str, tmp_path: Path, missing: str) -> None:
    where = (bucket, "uploads/nope.mp4") if missing == "key" else (f"gone-{uuid.uuid4().hex[:8]}", "a.mp4")
    with pytest.raises(SourceNotFound, match="not found") as caught:
        storage.download(*where, tmp_path / "source")
    assert (caught.value.code, caught.value.retryable) == ("SOURCE_NOT_FOUND", False)
    assert not (tmp_path / "source").exists()


def test_download_size_limit(s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="big.mp4", Body=b"x" * 2000)
    limited = Storage(s3, bucket=bucket, allowed_buckets=frozenset({bucket}), max_source_bytes=1999)
    with pytest.raises(SourceTooLarge, match="2000") as caught:
        limited.download(bucket, "big.mp4", tmp_path / "source")
    assert (caught.value.code, caught.value.retryable) == ("MEDIA_LIMIT_EXCEEDED", False)
    assert not (tmp_path / "source").exists()
    exact = Storage(s3, bucket=bucket, allowed_buckets=frozenset({bucket}), max_source_bytes=2000)
    assert exact.download(bucket, "big.mp4", tmp_path / "source") == 2000


def test_an_attachment_has_its_own_smaller_limit(
    storage: Storage, s3: Any, bucket: str, tmp_path: Path
) -> None:
    s3.put_object(Bucket=bucket, Key="scenario.json", Body=b"{}" * 600)
    with pytest.raises(SourceTooLarge, match="1200 bytes; the limit is 1000"):
        storage.download(bucket, "scenario.json", tmp_path / "scenario.json", max_bytes=1000)
    assert not (tmp_path / "scenario.json").exists()
    assert storage.download(bucket, "scenario.json", tmp_path / "scenario.json", max_bytes=1200) == 1200


def test_multipart_upload_round_trip_with_checksum(
    storage: Storage, s3: Any, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(12 * MiB)
    path = tmp_path / "output.mp4"
    path.write_bytes(data)
    stored = storage.publish(path, "processed/upscaled/j1/clip_upscaled.mp4", "j1")
    assert (stored.size, stored.sha256, stored.job_id) == (len(data), hashlib.sha256(data).hexdigest(), "j1")
    head = s3.head_object(
        Bucket=bucket, Key="processed/upscaled/j1/clip_upscaled.mp4", ChecksumMode="ENABLED"
    )
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "video/mp4"
    assert "-" in head["ETag"], "not a multipart upload"
    assert len(base64.b64decode(head["ChecksumSHA256"].split("-")[0])) == 32
    body = s3.get_object(Bucket=bucket, Key="processed/upscaled/j1/clip_upscaled.mp4")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_small_upload_is_single_part_with_checksum(
    storage: Storage, s3: Any, bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(1000)
    path = tmp_path / "output.mp4"
    path.write_bytes(data)
    storage.publish(path, "out/small.mp4", "j1")
    head = s3.head_object(Bucket=bucket, Key="out/small.mp4", ChecksumMode="ENABLED")
    assert "-" not in head["ETag"]
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single", "multipart"])
def test_a_segment_is_published_tagged_for_the_lifecycle_rule(
    storage: Storage, s3: Any, bucket: str, tmp_path: Path, size: int
) -> None:
    path = tmp_path / "segment.ts"
    path.write_bytes(os.urandom(size))
    key = "jobs/j1/segments/00000.ts"
    storage.publish(path, key, "j1", content_type="video/mp2t", tags={"vidworker": "segment"})
    assert s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == [
        {"Key": "vidworker", "Value": "segment"}
    ]
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "video/mp2t" and head["Metadata"]["vidworker-job-id"] == "j1"


def test_a_state_object_is_written_once(storage: Storage) -> None:
    key = "jobs/j1/result.json"
    assert storage.get_json(key) is None
    first = {"jobId": "j1", "status": "COMPLETED", "fileSize": 10}
    assert storage.put_json_once(key, first) is True
    assert storage.put_json_once(key, {"jobId": "j1", "status": "COMPLETED", "fileSize": 99}) is False
    assert storage.get_json(key) == first


def test_presigned_url_downloads_the_object(storage: Storage, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="processed/a b/ü.mp4", Body=b"payload")
    url = storage.presign("processed/a b/ü.mp4")
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read() == b"payload"


def test_presign_lifetime_is_configurable(s3: Any, bucket: str) -> None:
    short = Storage(s3, bucket=bucket, allowed_buckets=frozenset({bucket}), presign_seconds=60)
    query = parse_qs(urlsplit(short.presign("x.mp4")).query)
    if "X-Amz-Expires" in query:  # SigV4
        assert query["X-Amz-Expires"] == ["60"]
    else:  # SigV2: an absolute epoch
        assert abs(int(query["Expires"][0]) - (time.time() + 60)) < 30


def test_unreachable_endpoint_is_a_retryable_storage_error(tmp_path: Path) -> None:
    storage = Storage(quick_client("http://127.0.0.1:9"), bucket="b", allowed_buckets=frozenset({"b"}))
    path = tmp_path / "output.mp4"
    path.write_bytes(b"x" * 100)
    calls = [
        lambda: storage.download("b", "k.mp4", tmp_path / "source"),
        lambda: storage.publish(path, "k.mp4", "j1"),
        lambda: storage.get_json("result.json"),
        lambda: storage.put_json_once("result.json", {}),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable) as caught:
            call()
        assert (caught.value.code, caught.value.retryable) == ("STORAGE_ERROR", True)


@pytest.fixture
def failing_puts(moto_server: EmbeddedAWS) -> Iterator[FaultProxy]:
    """A proxy to moto that answers every PUT with a 503 SlowDown."""
    proxy = FaultProxy(moto_server.endpoint)
    proxy.fail(lambda method, path: method == "PUT", 10**6)
    yield proxy
    proxy.stop()


def test_server_errors_on_result_write_are_storage_errors(failing_puts: FaultProxy, bucket: str) -> None:
    storage = Storage(quick_client(failing_puts.endpoint), bucket=bucket, allowed_buckets=frozenset({bucket}))
    with pytest.raises(StorageUnavailable, match="SlowDown"):
        storage.put_json_once("result.json", {})


def test_server_errors_on_upload_are_storage_errors(
    failing_puts: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    storage = Storage(quick_client(failing_puts.endpoint), bucket=bucket, allowed_buckets=frozenset({bucket}))
    path = tmp_path / "output.mp4"
    path.write_bytes(b"x" * 100)
    with pytest.raises(StorageUnavailable):
        storage.publish(path, "processed/upscaled/j1/clip_upscaled.mp4", "j1")


@pytest.mark.parametrize("size", [1000, 12 * MiB], ids=["single-part", "multipart"])
def test_publication_is_exclusive_stamped_and_adopted_only_by_its_own_job(
    storage: Storage, s3: Any, bucket: str, tmp_path: Path, size: int
) -> None:
    """If-None-Match on PutObject and on CompleteMultipartUpload: a published output is never replaced."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    first.write_bytes(os.urandom(size))
    second.write_bytes(os.urandom(size))
    key = "processed/upscaled/j1/out.mp4"
    stored = storage.publish(first, key, "j1")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"] == {JOB_STAMP: "j1", SHA_STAMP: hashlib.sha256(first.read_bytes()).hexdigest()}
    again = storage.publish(second, key, "j1")  # a second run of the same job adopts the first's bytes
    assert again == stored
    with pytest.raises(OutputTaken, match="job 'j1'") as caught:
        storage.publish(second, key, "j2")
    assert (caught.value.code, caught.value.retryable) == ("INPUT_INVALID", False)
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    assert len(versions) == 1
    stored_bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert (len(stored_bytes), hashlib.sha256(stored_bytes).hexdigest()) == (size, stored.sha256)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_unstamped_object_is_never_adopted(storage: Storage, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="processed/x.mp4", Body=b"someone else's")
    path = tmp_path / "output.mp4"
    path.write_bytes(b"ours")
    with pytest.raises(OutputTaken, match="no job"):
        storage.publish(path, "processed/x.mp4", "j1")
    assert s3.get_object(Bucket=bucket, Key="processed/x.mp4")["Body"].read() == b"someone else's"


def test_download_refused_when_it_would_fill_the_disk(s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="a.mp4", Body=b"x" * 100)
    greedy = Storage(s3, bucket=bucket, allowed_buckets=frozenset({bucket}), reserve_bytes=1024**5)
    with pytest.raises(DiskFull, match="WORKER_MIN_FREE_BYTES") as caught:
        greedy.download(bucket, "a.mp4", tmp_path / "source")
    assert (caught.value.code, caught.value.retryable) == ("DISK_FULL", True)
    assert not (tmp_path / "source").exists()


def test_transfers_stop_when_aborted(storage: Storage, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="big.mp4", Body=os.urandom(6 * MiB))
    with pytest.raises(TransferAborted):
        storage.download(bucket, "big.mp4", tmp_path / "source", abort=lambda: True)
    path = tmp_path / "output.mp4"
    path.write_bytes(os.urandom(12 * MiB))
    with pytest.raises(TransferAborted):
        storage.publish(path, "processed/upscaled/j9/o.mp4", "j9", abort=lambda: True)
    assert storage.stamp("processed/upscaled/j9/o.mp4") is None
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_adopted_output_is_recorded_with_its_real_size_through_a_proxy(
    moto_server: EmbeddedAWS, bucket: str, tmp_path: Path
) -> None:
    """A HEAD's Content-Length through the test proxies is the object's (the soak once recorded 0)."""
    proxy = FaultProxy(moto_server.endpoint)
    try:
        storage = Storage(quick_client(proxy.endpoint), bucket=bucket, allowed_buckets=frozenset({bucket}))
        path = tmp_path / "output.mp4"
        path.write_bytes(os.urandom(3255))
        first = storage.publish(path, "processed/upscaled/j1/o.mp4", "j1")
        again = storage.publish(path, "processed/upscaled/j1/o.mp4", "j1")
        assert again == first and again.size == 3255
        stamp = storage.stamp("processed/upscaled/j1/o.mp4")
        assert stamp is not None and stamp.size == 3255
    finally:
        proxy.stop()
