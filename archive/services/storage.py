"""Where archived documents go: a local directory (the default) or an S3 bucket (ARCHIVE_S3_BUCKET). Both write a
key at most once: `write_new` answers False when the key exists already, and never overwrites it."""

import functools
import os
import tempfile
from pathlib import Path
from typing import Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from django.conf import settings


class ArchiveStorage(Protocol):
    label: str  # "local" or "s3", the storage label of the metrics

    def write_new(self, key: str, body: bytes) -> bool:
        """True when written, False when the key existed (nothing written). Raises on any other failure."""

    def check(self) -> None:
        """Raises when the storage cannot be written (readiness)."""


class LocalArchiveStorage:
    """Files under `root`, each written to a temporary file and linked into place: the link fails if the name
    exists, so a file is never overwritten and a reader never sees a partial one (a crash leaves only a stray
    temporary file, named .tmp-*)."""

    label = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):  # keys are sanitised; this is the second lock
            raise ValueError(f"key {key!r} is outside the archive directory")
        return path

    def write_new(self, key: str, body: bytes) -> bool:
        path = self.path(key)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(temporary)

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise PermissionError(f"archive directory {self.root} is not writable")


class S3ArchiveStorage:
    """Objects in a bucket, written with `If-None-Match: *` (S3 conditional writes): S3 answers 412 when the key
    exists, and 409 when another writer is creating it at the same moment; both mean "already archived".
    With a KMS key id, objects are encrypted with SSE-KMS under that key.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html"""

    label = "s3"

    def __init__(self, *, bucket: str, endpoint_url: str, region: str, kms_key_id: str) -> None:
        self.bucket = bucket
        self.kms_key_id = kms_key_id
        self.client = _s3_client(endpoint_url, region)

    def write_new(self, key: str, body: bytes) -> bool:
        extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id} if self.kms_key_id else {}
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*", **extra
            )
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) or error.response.get("Error", {}).get("Code") == "PreconditionFailed":
                return False
            raise
        return True

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


@functools.cache
def _s3_client(endpoint_url: str, region: str):
    # A few attempts inside botocore; the archiver retries beyond that with its own backoff (and counts it).
    config = Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 2})
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region, config=config)


def archive_storage() -> ArchiveStorage:
    """The configured storage: S3 when ARCHIVE_S3_BUCKET is set, else ARCHIVE_LOCAL_DIR."""
    if settings.ARCHIVE_S3_BUCKET:
        return S3ArchiveStorage(
            bucket=settings.ARCHIVE_S3_BUCKET,
            endpoint_url=settings.ARCHIVE_S3_ENDPOINT_URL,
            region=settings.ARCHIVE_S3_REGION,
            kms_key_id=settings.ARCHIVE_S3_KMS_KEY_ID,
        )
    return LocalArchiveStorage(settings.ARCHIVE_LOCAL_DIR)
