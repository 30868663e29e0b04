"""Prepared emails and dry-run lists in S3 (django-storages) when a bucket is configured, here moto's server."""

import uuid

import boto3
import pytest

from emailsys.testing import process_env
from workorders.models import WorkOrderStep
from workorders.services.steps import workorder_run
from workorders.tests.factories import ContactFactory
from workorders.tests.test_steps import make_work_order

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def s3_bucket(moto_endpoint, settings, monkeypatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bucket = f"emailsys-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": bucket, "endpoint_url": moto_endpoint, "region_name": "us-east-1"},
        },
    }
    return bucket


def test_prepare_and_dry_run_store_their_files_in_the_configured_bucket(smtp, s3_bucket, moto_endpoint) -> None:
    ContactFactory(language="en", name="Ann")
    ContactFactory(language="fr", name="Fleur")
    work_order = make_work_order(smtp)

    assert workorder_run(work_order_id=work_order.id) == "complete"

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = {item["Key"] for item in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    prepare = WorkOrderStep.objects.get(work_order=work_order, name="prepare")
    prepared = set(prepare.result["files"].values())
    assert len(prepared) == 2 and prepared <= keys, (prepared, keys)  # one prepared email per language
    assert len(keys) == 3, keys  # and the dry-run list
    assert len(smtp.snapshot()) == 2  # Send read the prepared emails back from the bucket


def test_the_artifacts_are_served_from_the_bucket_by_the_admin_and_the_api(
    smtp, s3_bucket, moto_endpoint, admin_client
) -> None:
    from django.urls import reverse

    ContactFactory(language="en", name="Ann")
    work_order = make_work_order(smtp, subjects={"en": ""})
    assert workorder_run(work_order_id=work_order.id) == "complete"

    page = admin_client.get(reverse("workorder-artifact", args=[work_order.id, "dry-run.csv"]) + "?download=1")
    assert page.status_code == 200 and page["Content-Type"] == "text/csv"
    assert page.content.decode().splitlines()[0] == "email,name,language,suppressed"
    listed = admin_client.get(f"/api/v1/workorders/{work_order.id}/artifacts/").json()
    assert [row["name"] for row in listed] == ["dry-run.csv", "prepared-en.eml"]
    prepared = admin_client.get(listed[1]["url"])
    assert prepared.status_code == 200 and "Subject: " in prepared.content.decode()

    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").delete_object(
        Bucket=s3_bucket, Key=WorkOrderStep.objects.get(work_order=work_order, name="dry_run").result["file"]
    )
    assert admin_client.get(listed[0]["url"]).status_code == 404  # gone from the bucket: no file, not a 500


def test_naming_a_bucket_in_the_environment_switches_stored_files_to_s3() -> None:
    import subprocess
    import sys

    from django.conf import settings as django_settings

    script = "from django.conf import settings; o = settings.STORAGES['default']; print(o['BACKEND'], o['OPTIONS'])"
    env = {**process_env(), "STORAGE_S3_BUCKET": "files", "STORAGE_S3_ENDPOINT_URL": "http://127.0.0.1:9"}
    output = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script], env=env, capture_output=True, text=True, check=True,
        cwd=django_settings.BASE_DIR,
    ).stdout  # fmt: skip
    assert "storages.backends.s3.S3Storage {" in output and "'bucket_name': 'files'" in output, output
    assert "http://127.0.0.1:9" in output
