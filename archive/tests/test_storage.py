"""Storage writes a key at most once: locally by linking a finished temporary file, on S3 with If-None-Match."""

import boto3
import pytest

from archive.services import LocalArchiveStorage, S3ArchiveStorage


def test_local_storage_writes_once_and_never_overwrites(tmp_path) -> None:
    storage = LocalArchiveStorage(tmp_path)
    key = "emails/2024/12/10/john.doe/m_143022.json"
    assert storage.write_new(key, b"first") is True
    assert storage.write_new(key, b"second") is False
    assert (tmp_path / key).read_bytes() == b"first"
    assert [p.name for p in (tmp_path / key).parent.iterdir()] == ["m_143022.json"], "no temporary file left"


def test_local_storage_refuses_a_key_outside_its_directory(tmp_path) -> None:
    with pytest.raises(ValueError, match="outside the archive directory"):
        LocalArchiveStorage(tmp_path / "archive").write_new("../escaped.json", b"x")
    assert not (tmp_path / "escaped.json").exists()


def test_moto_server_honours_if_none_match_so_the_first_write_wins(archive_setup) -> None:
    """moto 5.2.5 in server mode answers 412 PreconditionFailed to a conditional put on an existing key (the
    archiver relies on it; head-then-put is not needed)."""
    storage = S3ArchiveStorage(bucket=archive_setup.bucket, endpoint_url=archive_setup.moto, region="us-east-1",
                               kms_key_id="")  # fmt: skip
    assert storage.write_new("emails/k.json", b'{"n": 1}') is True
    assert storage.write_new("emails/k.json", b'{"n": 2}') is False
    body = archive_setup.s3.get_object(Bucket=archive_setup.bucket, Key="emails/k.json")["Body"].read()
    assert body == b'{"n": 1}'


def test_sse_kms_encrypts_each_object_with_the_configured_key(archive_setup) -> None:
    kms = boto3.client("kms", endpoint_url=archive_setup.moto, region_name="us-east-1")
    key_id = kms.create_key(Description="archive test")["KeyMetadata"]["KeyId"]
    storage = S3ArchiveStorage(bucket=archive_setup.bucket, endpoint_url=archive_setup.moto, region="us-east-1",
                               kms_key_id=key_id)  # fmt: skip
    assert storage.write_new("emails/encrypted.json", b"{}") is True
    head = archive_setup.s3.head_object(Bucket=archive_setup.bucket, Key="emails/encrypted.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]
    plain = S3ArchiveStorage(bucket=archive_setup.bucket, endpoint_url=archive_setup.moto, region="us-east-1",
                             kms_key_id="")  # fmt: skip
    plain.write_new("emails/plain.json", b"{}")
    assert (
        archive_setup.s3.head_object(Bucket=archive_setup.bucket, Key="emails/plain.json").get("ServerSideEncryption")
        != "aws:kms"
    )
