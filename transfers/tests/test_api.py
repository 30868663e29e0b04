"""The import and export endpoints: upload → job → report, the bad files that are refused with a reason (and
store nothing), permissions, and a streamed export. The worker's part runs here through its service (the task
is a one-line entry point; the browser test runs it on a real worker)."""

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from campaigns.models import Campaign, Lead, Recipient
from campaigns.tests.factories import CampaignFactory, LeadFactory, RecipientFactory
from emailsys.testing import api_authorization
from transfers.models import ImportJob
from transfers.services.imports import import_job_permissions, import_job_run

pytestmark = pytest.mark.django_db
LEADS = "lead_id,email,first_name,industry\nacme,jane@acme.example,Jane,logistics\nacme,not-an-email,Joe,x\n"


def operator(*permissions: str):
    user = get_user_model().objects.create_user("operator", is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return get_user_model().objects.get(pk=user.pk)


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=api_authorization(user))
    return client


@pytest.fixture
def importer() -> APIClient:
    return client_for(operator("transfers.view_importjob", *import_job_permissions(kind="leads"),
                               *import_job_permissions(kind="campaign")))  # fmt: skip


def upload(client: APIClient, content: bytes, name: str = "leads.csv", **fields):
    return client.post("/api/v1/imports/", {"file": SimpleUploadedFile(name, content), **fields}, format="multipart")


def test_upload_preview_run_and_report_as_json_and_csv(importer: APIClient) -> None:
    campaign = CampaignFactory()
    answer = upload(importer, LEADS.encode(), kind="leads", campaign=campaign.pk, start="false")
    assert answer.status_code == 201, answer.content
    job_id = answer.json()["id"]
    assert answer.json()["status"] == "uploaded"

    preview = importer.get(f"/api/v1/imports/{job_id}/preview/").json()
    assert preview["columns"][3] == ["industry", "Custom lead field “industry”"]
    assert preview["rows"][0] == ["acme", "jane@acme.example", "Jane", "logistics"]

    started = importer.post(f"/api/v1/imports/{job_id}/start/")
    assert started.status_code == 200 and started.json()["status"] == "queued"
    assert importer.post(f"/api/v1/imports/{job_id}/start/").status_code == 409  # once only
    import_job_run(job_id=job_id)  # what the worker does

    job = importer.get(f"/api/v1/imports/{job_id}/").json()
    assert (job["status"], job["percent"], job["created"], job["skipped"], job["leads_created"]) == (
        "done",
        100,
        1,
        1,
        1,
    )
    report = importer.get(f"/api/v1/imports/{job_id}/report/").json()
    assert report["skipped_rows"] == [[3, "invalid email 'not-an-email'"]]
    lead = Lead.objects.get(campaign=campaign)
    assert lead.custom_fields == {"industry": "logistics"}

    as_csv = importer.get(f"/api/v1/imports/{job_id}/report-csv/", HTTP_ACCEPT="text/csv")
    assert as_csv["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert rows[0] == ["result", "count", "line", "reason"]
    assert ["created", "1", "", ""] in rows and ["skipped", "", "3", "invalid email 'not-an-email'"] in rows


@pytest.mark.parametrize(
    ("name", "content", "kind", "message"),
    [
        ("leads.csv", b"", "leads", "leads.csv is empty."),
        ("leads.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "leads", "is not a CSV file (it holds binary data)"),
        ("leads.csv", "lead_id;émail\n".encode("latin-1"), "leads", "Line 1 (the header): not UTF-8 text"),
        ("leads.csv", b"name,company\nx,y\n", "leads", "The CSV header has no 'lead_id' and 'email' column"),
        ("leads.xlsx", b"PK\x03\x04", "leads", "leads.xlsx: expected a .csv or .txt file."),
        ("campaign.yaml", b"name: [unclosed\nsteps: 1\n", "campaign", "campaign.yaml is not valid YAML"),
        ("campaign.json", b"\xff\xfe{}", "campaign", "campaign.json is not UTF-8 text"),
        ("campaign.yaml", b"- just\n- a list\n", "campaign", "the top level must be a mapping"),
    ],
)
def test_a_bad_file_is_refused_with_its_reason_and_nothing_is_stored(importer, name, content, kind, message) -> None:
    campaign = CampaignFactory()
    answer = upload(importer, content, name=name, kind=kind, campaign=campaign.pk)
    assert answer.status_code == 400, answer.content
    assert message in " ".join(answer.json()["file"])
    assert not ImportJob.objects.exists()


def test_a_huge_line_is_that_rows_error_and_the_rest_imports(importer: APIClient) -> None:
    campaign = CampaignFactory()
    content = f"lead_id,email\nbig,{'x' * 200_000}@a.example\nok,ok@a.example\n".encode()
    job_id = upload(importer, content, kind="leads", campaign=campaign.pk).json()["id"]
    import_job_run(job_id=job_id)
    job = ImportJob.objects.get(pk=job_id)
    assert (job.status, job.created, job.skipped) == ("done", 1, 1)
    assert job.skipped_rows[0][0] == 2 and "longer than 131,072 characters" in job.skipped_rows[0][1]


def test_a_campaign_that_does_not_validate_fails_with_every_problem_named(importer: APIClient) -> None:
    content = b"name: Spring\nsteps:\n  - template: missing-template\naccounts:\n  - email: nobody@example.test\n"
    job_id = upload(importer, content, name="spring.yaml", kind="campaign").json()["id"]
    import_job_run(job_id=job_id)
    job = importer.get(f"/api/v1/imports/{job_id}/").json()
    assert job["status"] == "failed"
    assert "steps[0].template: no template named 'missing-template'" in job["error"]
    assert "accounts[0].email: no sender account 'nobody@example.test'" in job["error"]


def test_importing_needs_the_permissions_of_what_it_writes() -> None:
    campaign = CampaignFactory()
    viewer = client_for(operator("transfers.view_importjob", "transfers.add_importjob", "campaigns.import_campaign"))
    answer = upload(viewer, LEADS.encode(), kind="leads", campaign=campaign.pk)
    assert answer.status_code == 403
    assert not ImportJob.objects.exists()


def test_leads_export_streams_recipients_with_statuses_filtered_and_needs_view_permissions() -> None:
    campaign, other = CampaignFactory(), CampaignFactory()
    lead = LeadFactory(campaign=campaign, external_id="acme", custom_fields={"industry": "logistics"})
    RecipientFactory(lead=lead, email="jane@acme.example", status=Recipient.Status.REPLIED, position=0)
    RecipientFactory(lead=LeadFactory(campaign=other), email="else@other.example", position=0)
    reader = client_for(operator("campaigns.view_lead", "campaigns.view_recipient"))
    answer = reader.get(f"/api/v1/exports/leads/?campaign={campaign.pk}", HTTP_ACCEPT="text/csv")
    assert answer.status_code == 200 and answer.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode("utf-8-sig"))))
    assert [(row["lead_id"], row["email"], row["recipient_status"], row["custom_fields"]) for row in rows] == [
        ("acme", "jane@acme.example", "replied", '{"industry": "logistics"}')
    ]
    assert reader.get("/api/v1/exports/leads/?campaign=x").status_code == 400
    assert reader.get("/api/v1/exports/send-records/").status_code == 403
    assert reader.get("/api/v1/exports/nothing/").status_code == 404


def test_the_schema_lists_the_import_and_export_endpoints(admin_user) -> None:
    schema = client_for(admin_user).get("/api/schema/?format=json").json()
    for route in ("/api/v1/imports/", "/api/v1/imports/{id}/report/", "/api/v1/imports/{id}/start/",
                  "/api/v1/exports/{name}/"):  # fmt: skip
        assert route in schema["paths"], route


def test_a_two_step_campaign_file_is_created_in_the_background_job(importer: APIClient) -> None:
    content = b"""name: Spring outreach
steps:
  - template: {name: spring-1, subject: "Hi {{ first_name }}", body_text: "Hello {{ first_name }}"}
  - delay: 2d
    threaded: true
    template: {name: spring-2, subject: "-", body_text: "Just checking in."}
"""
    job_id = upload(importer, content, name="spring.yaml", kind="campaign", start="false").json()["id"]
    preview = importer.get(f"/api/v1/imports/{job_id}/preview/").json()
    assert preview["outline"]["name"] == "Spring outreach"
    assert [step["template"] for step in preview["outline"]["steps"]] == ["spring-1", "spring-2"]
    importer.post(f"/api/v1/imports/{job_id}/start/")
    import_job_run(job_id=job_id)
    job = importer.get(f"/api/v1/imports/{job_id}/").json()
    assert job["status"] == "done" and job["result_campaign"] is not None
    campaign = Campaign.objects.get(pk=job["result_campaign"])
    assert (campaign.name, campaign.status, campaign.steps.count()) == ("Spring outreach", "draft", 2)
