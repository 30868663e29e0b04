"""The admin's import and export pages without a browser: a bad file is a message on the form (never a 500, no
job stored), each page checks its permissions, and an export follows the change list's filters."""

import csv
import io

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, Client

from campaigns.tests.factories import ActivityFactory, CampaignFactory, LeadFactory, RecipientFactory
from emailsys.live_access import LIVE_GROUP_KINDS
from transfers.models import ImportJob
from transfers.services.imports import import_job_permissions, import_job_run

pytestmark = pytest.mark.django_db


def logged_in(*permissions: str) -> Client:
    user = get_user_model().objects.create_user(f"user{get_user_model().objects.count()}", is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client = Client()
    client.force_login(user)
    return client


CONTACTS_IMPORTER = ("transfers.view_importjob", *import_job_permissions(kind="contacts"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The submitted file is empty."),
        (b"name\nAna\n", "The CSV header has no &#x27;email&#x27; column"),
        (b"\xff\xfeemail\n", "Line 1 (the header): not UTF-8 text"),
    ],
)
def test_a_bad_upload_is_a_message_on_the_form(content: bytes, message: str) -> None:
    answer = logged_in(*CONTACTS_IMPORTER).post(
        "/admin/transfers/importjob/upload/", {"kind": "contacts", "file": SimpleUploadedFile("contacts.csv", content)}
    )
    assert answer.status_code == 200
    assert message in answer.content.decode()
    assert not ImportJob.objects.exists()


def test_contacts_upload_preview_start_and_report_in_the_admin() -> None:
    client = logged_in(*CONTACTS_IMPORTER)
    content = b"email,name,city\nana@example.org,Ana,Lisbon\nbad,Bob,Porto\n"
    answer = client.post("/admin/transfers/importjob/upload/",
                         {"kind": "contacts", "file": SimpleUploadedFile("contacts.csv", content)})  # fmt: skip
    job = ImportJob.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/admin/transfers/importjob/{job.pk}/change/"
    page = client.get(answer["Location"]).content.decode()
    assert "Text attribute “city”" in page and "ana@example.org" in page and "Start the import" in page
    assert client.get(f"/admin/transfers/importjob/{job.pk}/start/").status_code == 405
    started = client.post(f"/admin/transfers/importjob/{job.pk}/start/")
    assert started.status_code == 200 and started.json()["status"] == "queued"
    assert client.post(f"/admin/transfers/importjob/{job.pk}/start/").status_code == 409
    import_job_run(job_id=job.pk)
    page = client.get(f"/admin/transfers/importjob/{job.pk}/change/").content.decode()
    assert "Start the import" not in page and "Skipped rows" in page
    report = client.get(f"/admin/transfers/importjob/{job.pk}/report.csv").content.decode("utf-8-sig")
    assert "skipped,,3,invalid email 'bad'" in report


def test_the_import_pages_check_permissions() -> None:
    campaign = CampaignFactory()
    contacts_only = logged_in(*CONTACTS_IMPORTER)
    leads = SimpleUploadedFile("l.csv", b"lead_id,email\na,a@b.example\n")
    answer = contacts_only.post(
        "/admin/transfers/importjob/upload/", {"kind": "leads", "campaign": campaign.pk, "file": leads}
    )
    assert answer.status_code == 200 and "Select a valid choice" in answer.content.decode()
    assert logged_in("transfers.view_importjob").get("/admin/transfers/importjob/upload/").status_code == 403
    assert LIVE_GROUP_KINDS["importjob"].permissions == ("transfers.view_importjob",)


def test_an_export_from_a_change_list_keeps_its_filters_and_needs_view_permissions() -> None:
    campaign, other = CampaignFactory(), CampaignFactory()
    RecipientFactory(lead=LeadFactory(campaign=campaign, external_id="kept"), email="kept@example.test", position=0)
    RecipientFactory(lead=LeadFactory(campaign=other, external_id="other"), email="other@example.test", position=0)
    client = logged_in("campaigns.view_lead", "campaigns.view_recipient", "campaigns.view_campaign")
    listing = client.get(f"/admin/campaigns/lead/?campaign__id__exact={campaign.pk}").content.decode()
    assert f'/admin/transfers/importjob/export/leads/?campaign__id__exact={campaign.pk}"' in listing
    answer = client.get(f"/admin/transfers/importjob/export/leads/?campaign__id__exact={campaign.pk}")
    rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode("utf-8-sig"))))
    assert [row["lead_id"] for row in rows] == ["kept"]
    assert client.get("/admin/transfers/importjob/export/leads/?nonsense__field=1").status_code == 400
    ActivityFactory()
    assert client.get("/admin/transfers/importjob/export/activities/").status_code == 403


def test_under_asgi_the_export_is_an_async_stream_read_chunk_by_chunk() -> None:
    """Django reads a sync iterator into a list before serving it over ASGI; ours must stay a stream there."""
    campaign = CampaignFactory()
    for n in range(3):
        RecipientFactory(lead=LeadFactory(campaign=campaign, external_id=f"l{n}"), email=f"p{n}@example.test",
                         position=0)  # fmt: skip
    user = get_user_model().objects.create_superuser("root", is_staff=True)
    client = AsyncClient()
    client.force_login(user)
    response = async_to_sync(client.get)(f"/admin/transfers/importjob/export/leads/?campaign__id__exact={campaign.pk}")
    assert response.status_code == 200 and response.is_async

    async def read() -> str:
        return b"".join([chunk async for chunk in response.streaming_content]).decode("utf-8-sig")

    rows = list(csv.DictReader(io.StringIO(async_to_sync(read)())))
    assert [row["lead_id"] for row in rows] == ["l0", "l1", "l2"]
