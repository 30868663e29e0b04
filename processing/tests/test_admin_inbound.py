"""The inbound admin pages: mailboxes without their secret, messages with parsed headers, text, the raw MIME
escaped and the result; "sync now" and "re-classify" only for roles holding their permission."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from processing.models import EmailResult, Mailbox
from processing.tests.inbound_rows import email_make, result_make

pytestmark = pytest.mark.django_db


def login(role: str) -> Client:
    user = get_user_model().objects.create_user(f"inbound-{role}", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def test_pages_show_parsed_raw_escaped_and_result_never_the_secret() -> None:
    email = email_make(email_id="adm-1", subject="<script>alert(1)</script>", body="Agenda <b>attached</b>")
    result_make(email, classification="meeting", confidence=0.8)
    Mailbox.objects.filter(pk=email.mailbox_id).update(
        webhook_secret="whsec_c2VjcmV0LXNob3VsZC1uZXZlci1zaG93", last_history_id=3, provider_history_id=10
    )
    viewer = login("viewer")

    listing = viewer.get(reverse("admin:processing_inboundemail_changelist")).content.decode()
    assert "meeting" in listing and "0.80" in listing and "ann@example.org" in listing
    page = viewer.get(reverse("admin:processing_inboundemail_change", args=[email.pk])).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page
    assert "Agenda &lt;b&gt;attached&lt;/b&gt;" in page  # the text and the raw MIME, escaped
    assert "Message-ID: &lt;m" in page  # a parsed header
    assert "text/calendar METHOD=REQUEST" in page  # the result's signals
    for path in (reverse("admin:processing_mailbox_changelist"),
                 reverse("admin:processing_mailbox_change", args=[email.mailbox_id])):  # fmt: skip
        content = viewer.get(path).content.decode()
        assert "inbox@example.com" in content
        assert "whsec_" not in content and "c2VjcmV0" not in content


def test_reclassify_needs_its_permission_and_replaces_the_result() -> None:
    email = email_make(email_id="adm-2", subject="50% off everything", body="Unsubscribe here. Big sale today!")
    old = result_make(email, classification="intro", confidence=0.51)
    changelist = reverse("admin:processing_inboundemail_changelist")
    form = {"action": "reclassify", ACTION_CHECKBOX_NAME: [email.pk], "index": 0}

    viewer = login("viewer")
    assert "reclassify" not in viewer.get(changelist).content.decode()
    viewer.post(changelist, form)
    assert EmailResult.objects.get(email=email).pk == old.pk

    operator = login("operator")
    assert operator.post(changelist, form).status_code == 302
    new = EmailResult.objects.get(email=email)
    assert new.pk != old.pk or new.processed_at != old.processed_at
    assert new.processor_id != "test-node/default@1"
