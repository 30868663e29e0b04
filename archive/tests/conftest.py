"""The archive's fixtures: the session's moto server as SQS and S3, a fresh archive queue (+ dead-letter queue)
and bucket per test, and the environment for an archiver process."""

from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest

from archive.services import archive_queues_ensure
from emailsys.sqs import sqs_client
from emailsys.testing import process_env, unique_token

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class ArchiveSetup:
    moto: str
    queue_name: str
    queue_url: str
    dead_letter_url: str
    bucket: str
    s3: object  # a boto3 S3 client on moto

    def env(self, **overrides: str) -> dict[str, str]:
        """An archiver process's environment: this queue and bucket, short timings."""
        values = {
            **AWS_ENV, "SQS_ENDPOINT_URL": self.moto, "ARCHIVE_QUEUE_NAME": self.queue_name,
            "ARCHIVE_S3_BUCKET": self.bucket, "ARCHIVE_S3_ENDPOINT_URL": self.moto, "POLL_INTERVAL_SECONDS": "1",
            "VISIBILITY_TIMEOUT_SECONDS": "4", "ARCHIVE_MAX_RECEIVE_COUNT": "5",
        }  # fmt: skip
        values.update(overrides)
        return process_env(**values)

    def keys(self) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def counts(self, url: str | None = None) -> tuple[int, int]:
        """(visible, in flight) messages of the queue (or of `url`)."""
        attributes = sqs_client().get_queue_attributes(
            QueueUrl=url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def archive_setup(moto_endpoint, settings, monkeypatch) -> Iterator[ArchiveSetup]:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    token = unique_token()
    name, bucket = f"archive-{token}", f"archive-{token}"
    settings.SQS_ENDPOINT_URL = moto_endpoint
    settings.ARCHIVE_QUEUE_NAME, settings.ARCHIVE_QUEUE_URL = name, ""
    settings.ARCHIVE_S3_BUCKET, settings.ARCHIVE_S3_ENDPOINT_URL = bucket, moto_endpoint
    settings.VISIBILITY_TIMEOUT_SECONDS, settings.POLL_INTERVAL_SECONDS = 4, 1
    url, dead_letter_url = archive_queues_ensure(name=name, max_receive_count=5, visibility_timeout=4)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    yield ArchiveSetup(moto_endpoint, name, url, dead_letter_url, bucket, s3)
