"""campaigns 0005, 0006 and workorders 0006 add the recipient email and send ledger constraints to existing data:
rows written before them, which they would refuse, are repaired first. Migrates the test database back and forth."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from emailsys import clock

BEFORE = [("campaigns", "0004_sender_account_esp"), ("workorders", "0005_mailingsend_resolved_by")]
AFTER = [
    ("campaigns", "0006_sendrecord_ledger_claims"),
    ("workorders", "0006_mailingsend_ledger_claims"),
]


def migrate(targets: list[tuple[str, str]]):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


@pytest.fixture
def old_apps():
    apps = migrate(BEFORE)
    yield apps
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_migrations_repair_what_the_new_constraints_refuse(old_apps) -> None:
    apps = old_apps
    template = apps.get_model("campaigns", "EmailTemplate").objects.create(name="t", subject="s", body_text="b")
    campaign = apps.get_model("campaigns", "Campaign").objects.create(name="c")
    step = apps.get_model("campaigns", "SequenceStep").objects.create(campaign=campaign, order=1, template=template)
    step2 = apps.get_model("campaigns", "SequenceStep").objects.create(campaign=campaign, order=2, template=template)
    Lead = apps.get_model("campaigns", "Lead")
    Recipient = apps.get_model("campaigns", "Recipient")
    SendRecord = apps.get_model("campaigns", "SendRecord")
    Activity = apps.get_model("campaigns", "Activity")
    lead, other_lead = Lead.objects.create(campaign=campaign), Lead.objects.create(campaign=campaign)
    alone = Recipient.objects.create(lead=lead, position=0, email="Alone@Example.test")
    # One address twice in one lead: the mixed-case one was emailed, the lower-case one only skipped and unsubscribed.
    emailed = Recipient.objects.create(lead=lead, position=1, email="Jane@Example.test", first_name="Jane")
    skipped = Recipient.objects.create(lead=lead, position=2, email="jane@example.test", status="unsubscribed",
                                       company_name="Acme")  # fmt: skip
    elsewhere = Recipient.objects.create(lead=other_lead, position=0, email="jane@example.test")
    common = {"campaign": campaign, "lead": lead}
    sent = SendRecord.objects.create(**common, recipient=emailed, step=step, state="sent", sent_at=clock.now(),
                                     message_id="<1@x>")  # fmt: skip
    twin_skip = SendRecord.objects.create(**common, recipient=skipped, step=step, state="skipped")
    moved = SendRecord.objects.create(**common, recipient=skipped, step=step2, state="skipped")
    activity = Activity.objects.create(created_at=clock.now(), kind="skipped", recipient=skipped)
    # Claims that break the new rules, each the way an older writer could have left it.
    stray = SendRecord.objects.create(campaign=campaign, lead=other_lead, recipient=elsewhere, step=step,
                                      state="failed", claim_token=uuid.uuid4(), claimed_until=clock.now())  # fmt: skip
    no_claim = SendRecord.objects.create(campaign=campaign, lead=other_lead, recipient=elsewhere, step=step2,
                                         state="handed_over")  # fmt: skip
    work_order = _work_order(apps, template)
    MailingSend = apps.get_model("workorders", "MailingSend")
    mailing = {"work_order": work_order, "email": "t@example.test", "event_code": "EV", "stage": "s",
               "language": "en", "is_test": True}  # fmt: skip
    mailing_stray = MailingSend.objects.create(**mailing, test_run=1, state="deferred", claimed_until=clock.now())
    mailing_no_claim = MailingSend.objects.create(**mailing, test_run=2, state="claimed")

    apps = migrate(AFTER)

    Recipient = apps.get_model("campaigns", "Recipient")
    assert Recipient.objects.get(pk=alone.pk).email == "alone@example.test"
    kept = Recipient.objects.get(pk=emailed.pk)
    assert not Recipient.objects.filter(pk=skipped.pk).exists()
    assert (kept.email, kept.status, kept.first_name, kept.company_name) == (
        "jane@example.test",
        "unsubscribed",
        "Jane",
        "Acme",
    )
    SendRecord = apps.get_model("campaigns", "SendRecord")
    assert not SendRecord.objects.filter(pk=twin_skip.pk).exists()
    assert SendRecord.objects.get(pk=sent.pk).recipient_id == kept.pk
    assert SendRecord.objects.get(pk=moved.pk).recipient_id == kept.pk
    assert apps.get_model("campaigns", "Activity").objects.get(pk=activity.pk).recipient_id == kept.pk
    assert Recipient.objects.get(pk=elsewhere.pk).email == "jane@example.test"
    stray = SendRecord.objects.get(pk=stray.pk)
    assert (stray.claim_token, stray.claimed_until) == (None, None)
    no_claim = SendRecord.objects.get(pk=no_claim.pk)
    assert no_claim.claim_token is not None and no_claim.claimed_until <= clock.now()  # a dead worker's: settled
    assert no_claim.handed_over_at == no_claim.updated_at
    MailingSend = apps.get_model("workorders", "MailingSend")
    assert MailingSend.objects.get(pk=mailing_stray.pk).claimed_until is None
    mailing_no_claim = MailingSend.objects.get(pk=mailing_no_claim.pk)
    assert mailing_no_claim.claim_token is not None
    assert mailing_no_claim.claimed_until == mailing_no_claim.updated_at


@pytest.mark.django_db(transaction=True)
def test_the_same_address_emailed_twice_in_one_lead_stops_the_migration_with_the_ids(old_apps) -> None:
    apps = old_apps
    template = apps.get_model("campaigns", "EmailTemplate").objects.create(name="t", subject="s", body_text="b")
    campaign = apps.get_model("campaigns", "Campaign").objects.create(name="c")
    step = apps.get_model("campaigns", "SequenceStep").objects.create(campaign=campaign, order=1, template=template)
    lead = apps.get_model("campaigns", "Lead").objects.create(campaign=campaign)
    Recipient = apps.get_model("campaigns", "Recipient")
    first = Recipient.objects.create(lead=lead, position=0, email="Jane@Example.test")
    second = Recipient.objects.create(lead=lead, position=1, email="jane@example.test")
    for recipient in (first, second):
        apps.get_model("campaigns", "SendRecord").objects.create(
            campaign=campaign, lead=lead, recipient=recipient, step=step, state="sent",
            sent_at=clock.now() - timedelta(days=1), message_id=f"<{recipient.pk}@x>",
        )  # fmt: skip

    with pytest.raises(RuntimeError, match=f"Recipients {first.pk}, {second.pk} of lead {lead.pk} .* each was emailed"):
        migrate(AFTER)

    Recipient.objects.filter(pk=second.pk).delete()  # what the operator decides
    apps = migrate(AFTER)
    assert apps.get_model("campaigns", "Recipient").objects.get(pk=first.pk).email == "jane@example.test"


def _work_order(apps, template):
    event = apps.get_model("workorders", "Event").objects.create(code="EV", name="Event")
    segment = apps.get_model("workorders", "Segment").objects.create(slug="all", name="All", rule={"always": True})
    account = apps.get_model("campaigns", "SenderAccount").objects.create(
        email="sender@example.test", smtp_host="smtp.example.test"
    )
    return apps.get_model("workorders", "WorkOrder").objects.create(
        event=event, stage="s", audience=segment, account=account, template=template, subjects={"en": ""}
    )
