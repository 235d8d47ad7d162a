"""S3: the source download, the exclusive output publication, JSON state objects, presigned links.

Contract: every call raises :class:`StorageUnavailable` (retryable) for 5xx,
throttling and network faults, after botocore's own retries; "not found" is
an answer (``None``) or :class:`SourceNotFound`, never a storage fault. An
``abort`` callback, when given, is polled between chunks of a transfer and
stops it by raising (the second signal's cold stop).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from worker.errors import (
    BucketNotAllowed,
    DiskFull,
    OutputTaken,
    SourceNotFound,
    SourceTooLarge,
    StorageUnavailable,
    TransferAborted,
)

log = logging.getLogger(__name__)

NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket", "403", "AccessDenied"}
EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
JOB_STAMP = "vidworker-job-id"
SHA_STAMP = "vidworker-sha256"
"""Object metadata that stamps a published output with its job and the SHA-256 of its bytes."""

Abort = Callable[[], bool]


def _never() -> bool:
    return False


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a local file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1024**2):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Stored:
    """A published output as S3 holds it: size in bytes, hex SHA-256 and the job that stamped it."""

    key: str
    size: int
    sha256: str
    job_id: str | None


@contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """Turn botocore's failures into :class:`StorageUnavailable` naming ``what``."""
    try:
        yield
    except ClientError as error:
        raise StorageUnavailable(f"{what} failed: {error}") from error
    except (BotoCoreError, RetriesExceededError, S3UploadFailedError) as error:
        raise StorageUnavailable(f"{what} failed: {error}") from error


class Storage:
    """One S3 client and the rules around it. Sizes in bytes, durations in seconds.

    ``reserve_bytes`` is the free disk a download must leave behind in its
    target's file system (the task writes its output there too).
    """

    def __init__(
        self,
        client: Any,
        *,
        bucket: str,
        allowed_buckets: frozenset[str],
        multipart_threshold: int = 64 * 1024**2,
        presign_seconds: int = 7 * 24 * 3600,
        max_source_bytes: int = 8 * 1024**3,
        reserve_bytes: int = 0,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.allowed = allowed_buckets
        self.presign_seconds = presign_seconds
        self.max_source_bytes = max_source_bytes
        self.reserve_bytes = reserve_bytes
        self.part_bytes = max(5 * 1024**2, min(multipart_threshold, 16 * 1024**2))
        self.multipart_threshold = multipart_threshold
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=self.part_bytes
        )

    def source_bucket(self, requested: str | None) -> str:
        bucket = requested or self.bucket
        if bucket.lower() not in self.allowed:
            raise BucketNotAllowed(f"bucket {bucket!r} is not in ALLOWED_BUCKETS")
        return bucket

    # ------------------------------------------------------------------ download

    def download(
        self, bucket: str, key: str, target: Path, *, max_bytes: int | None = None, abort: Abort = _never
    ) -> int:
        """Fetch ``s3://bucket/key`` to ``target`` (a fixed name in the job dir); returns its size.

        Refused above ``max_bytes`` (default: the source limit), or when it would
        leave less than ``reserve_bytes`` free, before anything is fetched.
        """
        limit = self.max_source_bytes if max_bytes is None else min(max_bytes, self.max_source_bytes)
        where = f"s3://{bucket}/{key}"

        def progress(_: int) -> None:
            if abort():
                raise TransferAborted(f"download of {where} aborted")

        try:
            with _s3_errors(f"download of {where}"):
                size = int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
                if size > limit:
                    raise SourceTooLarge(f"{where} is {size} bytes; the limit is {limit}")
                self._check_disk(target.parent, size)
                self.client.download_file(bucket, key, str(target), Config=self.transfer, Callback=progress)
        except StorageUnavailable as error:
            cause = error.__cause__
            if isinstance(cause, ClientError) and _code(cause) in NOT_FOUND:
                raise SourceNotFound(f"{where} not found or not readable ({_code(cause)})") from None
            if abort():
                raise TransferAborted(f"download of {where} aborted") from None
            raise
        return size

    def etag(self, bucket: str, key: str) -> str:
        """The object's ETag (which changes whenever its bytes do)."""
        with _s3_errors(f"reading s3://{bucket}/{key}"):
            return str(self.client.head_object(Bucket=bucket, Key=key)["ETag"])

    def _check_disk(self, folder: Path, size: int) -> None:
        free = shutil.disk_usage(folder).free
        if free - size < self.reserve_bytes:
            raise DiskFull(
                f"{size} bytes to download but {free} free in {folder}; "
                f"WORKER_MIN_FREE_BYTES keeps {self.reserve_bytes}"
            )

    # ------------------------------------------------------------------ publication

    def publish(
        self, path: Path, key: str, job_id: str, *, abort: Abort = _never, content_type: str = "video/mp4",
        tags: Mapping[str, str] | None = None,
    ) -> Stored:  # fmt: skip
        """Upload ``path`` to ``key`` only if nothing is there (``If-None-Match: *``), stamped
        (and tagged with ``tags``, for the bucket's lifecycle rules).

        A key already holding this job's stamped output is adopted as it is
        (an earlier run, or a retried request whose first try had landed);
        anything else there raises :class:`OutputTaken` and nothing is written.
        """
        digest = sha256_file(path)
        size = path.stat().st_size
        stamps = {JOB_STAMP: job_id, SHA_STAMP: digest}
        headers: dict[str, Any] = {"Metadata": stamps, "ContentType": content_type}
        if tags:
            headers["Tagging"] = urlencode(tags)
        if not self._put_once(path, key, headers, size, abort):
            found = self.stamp(key)
            if found is None or found.job_id != job_id:
                owner = "no job" if found is None or found.job_id is None else f"job {found.job_id!r}"
                raise OutputTaken(f"{key} already holds an output of {owner}")
            if found.sha256 == digest:  # the same bytes: what we know of them locally is exact
                return Stored(key, size, digest, job_id)
            log.warning("%s holds this job's output from an earlier run (other bytes); kept", key)
            return found
        return Stored(key, size, digest, job_id)

    def stamp(self, key: str) -> Stored | None:
        """What the stamp of the object at ``key`` says, or None when there is no object."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageUnavailable(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        meta = {name.lower(): value for name, value in head.get("Metadata", {}).items()}
        return Stored(key, int(head["ContentLength"]), meta.get(SHA_STAMP, ""), meta.get(JOB_STAMP))

    def _put_once(self, path: Path, key: str, headers: dict[str, Any], size: int, abort: Abort) -> bool:
        """Write ``path`` to ``key`` (with ``headers``: metadata, type, tags) unless an object is there;
        False when one was."""
        try:
            with _s3_errors(f"upload to s3://{self.bucket}/{key}"):
                if size < self.multipart_threshold:
                    with path.open("rb") as body:
                        self.client.put_object(
                            Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*",
                            ChecksumAlgorithm="SHA256", **headers,
                        )  # fmt: skip
                else:
                    self._multipart_once(path, key, headers, abort)
        except StorageUnavailable as error:
            if isinstance(error.__cause__, ClientError) and _code(error.__cause__) in EXISTS:
                return False
            raise
        return True

    def _multipart_once(self, path: Path, key: str, headers: dict[str, Any], abort: Abort) -> None:
        """CreateMultipartUpload / UploadPart / CompleteMultipartUpload with ``If-None-Match``.

        (boto3's managed transfer cannot pass the condition.) A failed or
        aborted upload is aborted on S3 too, so no parts linger.
        """
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256", **headers
        )["UploadId"]
        try:
            with path.open("rb") as stream:
                parts = list(self._parts(stream, key, upload, abort))
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, IfNoneMatch="*",
                MultipartUpload={"Parts": parts},
            )  # fmt: skip
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            except (ClientError, BotoCoreError) as error:  # the bucket's lifecycle rule cleans up
                log.warning("could not abort multipart upload of %s: %s", key, error)
            raise

    def _parts(self, stream: BinaryIO, key: str, upload: str, abort: Abort) -> Iterator[dict[str, Any]]:
        number = 0
        while chunk := stream.read(self.part_bytes):
            if abort():
                raise TransferAborted(f"upload of {key} aborted")
            number += 1
            checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
            reply = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk,
                ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
            )  # fmt: skip
            yield {"ETag": reply["ETag"], "PartNumber": number, "ChecksumSHA256": checksum}

    # ------------------------------------------------------------------ JSON state

    def get_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object at ``key`` in the output bucket, or ``None`` when there is none."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if _code(error) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageUnavailable(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        except BotoCoreError as error:
            raise StorageUnavailable(f"reading s3://{self.bucket}/{key} failed: {error}") from error
        try:
            found = json.loads(body)
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise StorageUnavailable(f"s3://{self.bucket}/{key} is not a JSON object")
        return found

    def put_json_once(self, key: str, record: dict[str, Any]) -> bool:
        """Write ``record`` only if ``key`` holds nothing (``If-None-Match: *``); False if it did."""
        body = json.dumps(record, indent=2).encode()
        try:
            with _s3_errors(f"writing s3://{self.bucket}/{key}"):
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*"
                )
        except StorageUnavailable as error:
            if isinstance(error.__cause__, ClientError) and _code(error.__cause__) in EXISTS:
                return False
            raise
        return True

    def put_json(self, key: str, record: dict[str, Any]) -> None:
        """Write (or replace) ``record`` at ``key``: for state that is not a decision (the outbox)."""
        with _s3_errors(f"writing s3://{self.bucket}/{key}"):
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps(record).encode(), ContentType="application/json"
            )

    def delete(self, key: str) -> None:
        with _s3_errors(f"deleting s3://{self.bucket}/{key}"):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, prefix: str, limit: int = 1000) -> list[str]:
        """Up to ``limit`` keys under ``prefix``, in key order."""
        with _s3_errors(f"listing s3://{self.bucket}/{prefix}"):
            reply = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=limit)
        return [item["Key"] for item in reply.get("Contents", [])]

    def presign(self, key: str) -> str:
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign_seconds
        )
        return url
