"""S3: the source download, the output upload, the ``result.json`` marker, presigned links."""

from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path
from typing import Any

from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import BucketNotAllowed, SourceNotFound, SourceTooLarge, StorageUnavailable

log = logging.getLogger(__name__)

OUTPUT_FOLDERS = {"UPSCALE": "upscaled", "CAPTION_RENDER": "captioned", "VISUALIZE": "visualized"}
"""Task type → the folder and suffix of its default output key (spec §5)."""

NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "403", "AccessDenied"}


def output_key(task_type: str, job_id: str, stem: str, requested: str | None) -> str:
    """The job's output key: the requested one, else ``processed/{folder}/{jobId}/{stem}_{folder}.mp4``."""
    if requested:
        return requested
    folder = OUTPUT_FOLDERS.get(task_type.upper(), task_type.lower())
    return f"processed/{folder}/{job_id}/{stem}_{folder}.mp4"


def result_key(output: str, job_id: str | None = None) -> str:
    """The job's completion record and idempotency marker, beside its output.

    ``{folder}/result.json`` when the output sits in a folder of the job's own
    (the default keys), else ``{output}.result.json``, so that two jobs writing
    into one shared folder never share a marker.
    """
    folder = posixpath.dirname(output)
    if job_id is not None and posixpath.basename(folder) == job_id:
        return posixpath.join(folder, "result.json")
    return f"{output}.result.json"


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Storage:
    """One S3 client and the rules around it. Sizes in bytes, durations in seconds."""

    def __init__(
        self,
        client: Any,
        *,
        bucket: str,
        allowed_buckets: frozenset[str],
        multipart_threshold: int = 64 * 1024**2,
        presign_seconds: int = 7 * 24 * 3600,
        max_source_bytes: int = 8 * 1024**3,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.allowed = allowed_buckets
        self.presign_seconds = presign_seconds
        self.max_source_bytes = max_source_bytes
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=16 * 1024**2
        )

    def source_bucket(self, requested: str | None) -> str:
        bucket = requested or self.bucket
        if bucket.lower() not in self.allowed:
            raise BucketNotAllowed(f"bucket {bucket!r} is not in ALLOWED_BUCKETS")
        return bucket

    def download(self, bucket: str, key: str, target: Path, *, max_bytes: int | None = None) -> int:
        """Fetch ``s3://bucket/key`` to ``target`` (a fixed name in the job dir); returns its size.

        Refused above ``max_bytes`` (default: the source limit) before anything is fetched.
        """
        limit = self.max_source_bytes if max_bytes is None else min(max_bytes, self.max_source_bytes)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
            size = int(head["ContentLength"])
            if size > limit:
                raise SourceTooLarge(f"s3://{bucket}/{key} is {size} bytes; the limit is {limit}")
            self.client.download_file(bucket, key, str(target), Config=self.transfer)
        except ClientError as error:
            if _code(error) in NOT_FOUND:
                raise SourceNotFound(
                    f"s3://{bucket}/{key} not found or not readable ({_code(error)})"
                ) from None
            raise StorageUnavailable(f"download of s3://{bucket}/{key} failed: {error}") from error
        except (BotoCoreError, RetriesExceededError) as error:
            raise StorageUnavailable(f"download of s3://{bucket}/{key} failed: {error}") from error
        return size

    def upload(self, path: Path, key: str) -> int:
        """Upload ``path`` to the output bucket (multipart above the threshold, SHA-256 checksums)."""
        extra = {"ContentType": "video/mp4", "ChecksumAlgorithm": "SHA256"}
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self.transfer)
        except (ClientError, BotoCoreError, S3UploadFailedError) as error:
            raise StorageUnavailable(f"upload to s3://{self.bucket}/{key} failed: {error}") from error
        return path.stat().st_size

    def read_result(self, key: str) -> dict[str, Any] | None:
        """The completion record at ``key``, or ``None`` when there is none yet."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if _code(error) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageUnavailable(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        record: dict[str, Any] = json.loads(body)
        return record

    def write_result(self, key: str, record: dict[str, Any]) -> bool:
        """Write the record only if none exists (``If-None-Match: *``); False if one already did."""
        body = json.dumps(record, indent=2).encode()
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*"
            )
        except ClientError as error:
            if _code(error) in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                log.info("result %s already written by an earlier attempt", key)
                return False
            raise StorageUnavailable(f"writing s3://{self.bucket}/{key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"writing s3://{self.bucket}/{key} failed: {error}") from error
        return True

    def presign(self, key: str) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign_seconds
        )
        return url
