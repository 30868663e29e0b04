from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db.models import TextField
from django.db.models.functions import Cast

from campaigns.models import Activity, Campaign, DryRunRecord, Lead, Recipient, SenderAccount, SendRecord, Suppression
from campaigns.services.accounts import account_reset_limits, account_set_status
from campaigns.services.lifecycle import campaign_reset_progress, campaign_set_status, lead_reset_progress
from campaigns.services.recipients import leads_bulk_update_status, recipients_update_statuses
from campaigns.services.suppressions import suppression_add, suppression_matches
from campaigns.tests.conftest import NOW
from campaigns.tests.factories import (
    AccountDailyUsageFactory,
    CampaignAccountFactory,
    CampaignFactory,
    DryRunRecordFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
)
from emailsys import crypto
from emailsys.crypto import encrypted_fields_rotate

pytestmark = pytest.mark.django_db


def ready_campaign(**kwargs) -> Campaign:
    campaign = CampaignFactory(**kwargs)
    SequenceStepFactory(campaign=campaign)
    CampaignAccountFactory(campaign=campaign)
    return campaign


# --- campaign status -------------------------------------------------------------------------------------


def test_activating_a_campaign_logs_the_change_and_makes_undated_leads_due_now(now):
    campaign = ready_campaign()
    undated = LeadFactory(campaign=campaign, next_due_at=None)
    later = LeadFactory(campaign=campaign, next_due_at=NOW + timedelta(days=1))
    finished = LeadFactory(campaign=campaign, next_due_at=None, state=Lead.State.FINISHED)

    campaign_set_status(campaign=campaign, status=Campaign.Status.ACTIVE, reason="go")

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.ACTIVE
    undated.refresh_from_db(), later.refresh_from_db(), finished.refresh_from_db()
    assert (undated.next_due_at, later.next_due_at, finished.next_due_at) == (NOW, NOW + timedelta(days=1), None)
    activity = Activity.objects.get(campaign=campaign)
    assert (activity.kind, activity.detail, activity.message) == (
        Activity.Kind.STATUS_CHANGED,
        {"from": "draft", "to": "active", "reason": "go"},
        "go",
    )


@pytest.mark.parametrize(
    ("with_step", "with_account", "missing"),
    [(False, True, "at least one sequence step"), (True, False, "at least one sender account")],
)
def test_a_campaign_without_steps_or_accounts_cannot_be_activated(with_step, with_account, missing):
    campaign = CampaignFactory()
    if with_step:
        SequenceStepFactory(campaign=campaign)
    if with_account:
        CampaignAccountFactory(campaign=campaign)

    with pytest.raises(ValidationError, match=missing):
        campaign_set_status(campaign=campaign, status=Campaign.Status.ACTIVE)

    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.DRAFT
    assert not Activity.objects.exists()


def test_a_completed_campaign_cannot_be_resumed_without_a_reset():
    campaign = ready_campaign(status=Campaign.Status.COMPLETED)

    with pytest.raises(ValidationError, match="reset its progress first"):
        campaign_set_status(campaign=campaign, status=Campaign.Status.ACTIVE)

    campaign_reset_progress(campaign=campaign)
    campaign_set_status(campaign=campaign, status=Campaign.Status.ACTIVE)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.ACTIVE


def test_a_started_campaign_cannot_go_back_to_draft():
    campaign = ready_campaign(status=Campaign.Status.PAUSED)
    with pytest.raises(ValidationError, match="cannot go back"):
        campaign_set_status(campaign=campaign, status=Campaign.Status.DRAFT)


def test_an_unknown_campaign_status_is_refused_with_the_valid_ones():
    campaign = ready_campaign()
    with pytest.raises(ValidationError, match="'running' is not a campaign status; use one of: draft, active"):
        campaign_set_status(campaign=campaign, status="running")


def test_setting_the_current_status_again_logs_nothing():
    campaign = ready_campaign(status=Campaign.Status.PAUSED)
    campaign_set_status(campaign=campaign, status=Campaign.Status.PAUSED)
    assert not Activity.objects.exists()


def test_pausing_and_completing_an_active_campaign():
    campaign = ready_campaign(status=Campaign.Status.ACTIVE)
    campaign_set_status(campaign=campaign, status=Campaign.Status.PAUSED, reason="holiday")
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.PAUSED
    campaign_set_status(campaign=campaign, status=Campaign.Status.COMPLETED)
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.COMPLETED
    assert [a.detail["to"] for a in Activity.objects.order_by("id")] == ["paused", "completed"]


# --- resets ----------------------------------------------------------------------------------------------


def test_campaign_reset_starts_every_lead_over_but_keeps_proof_of_sent_email(now):
    campaign = ready_campaign(status=Campaign.Status.COMPLETED)
    step_1 = campaign.steps.get()
    step_2 = SequenceStepFactory(campaign=campaign)
    lead = LeadFactory(campaign=campaign, state=Lead.State.STOPPED, stop_reason="replied", current_step=2,
                       last_sent_at=NOW - timedelta(days=1), next_due_at=None)  # fmt: skip
    contacted = RecipientFactory(lead=lead, status=Recipient.Status.CONTACTED, last_step=1,
                                 last_contacted_at=NOW - timedelta(days=1))  # fmt: skip
    replied = RecipientFactory(lead=lead, status=Recipient.Status.REPLIED)
    bounced = RecipientFactory(lead=lead, status=Recipient.Status.BOUNCED)
    unsubscribed = RecipientFactory(lead=lead, status=Recipient.Status.UNSUBSCRIBED)
    kept = [
        SendRecordFactory(recipient=recipient, step=step_1, state=state)
        for recipient, state in ((contacted, "sent"), (replied, "handed_over"), (bounced, "unknown"),
                                 (unsubscribed, "claimed"))
    ]  # fmt: skip
    for recipient, state in ((contacted, "failed"), (replied, "skipped"), (bounced, "deferred")):
        SendRecordFactory(recipient=recipient, step=step_2, state=state)
    DryRunRecordFactory(recipient=contacted, step=step_2)
    other = LeadFactory(current_step=3, next_due_at=None)

    assert campaign_reset_progress(campaign=campaign) == 1

    lead.refresh_from_db()
    assert (lead.state, lead.stop_reason, lead.current_step, lead.last_sent_at, lead.next_due_at) == (
        Lead.State.IN_PROGRESS, "", 1, None, NOW,
    )  # fmt: skip
    statuses = dict(Recipient.objects.filter(lead=lead).values_list("email", "status"))
    assert statuses == {
        contacted.email: "not_contacted",
        replied.email: "not_contacted",
        bounced.email: "bounced",
        unsubscribed.email: "unsubscribed",
    }
    assert Recipient.objects.get(pk=contacted.pk).last_contacted_at is None
    assert set(SendRecord.objects.values_list("pk", flat=True)) == {record.pk for record in kept}
    assert not DryRunRecord.objects.exists()
    assert Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.PAUSED
    other.refresh_from_db()
    assert (other.current_step, other.next_due_at) == (3, None)
    activity = Activity.objects.get(campaign=campaign)
    assert activity.detail["leads"] == 1 and activity.detail["send_records_deleted"] == 3
    assert (activity.detail["from"], activity.detail["to"]) == ("completed", "paused")


def test_lead_reset_touches_only_that_lead(now):
    campaign = ready_campaign(status=Campaign.Status.ACTIVE)
    step = campaign.steps.get()
    lead = LeadFactory(campaign=campaign, current_step=2, state=Lead.State.FINISHED, next_due_at=None)
    neighbour = LeadFactory(campaign=campaign, current_step=2, state=Lead.State.FINISHED, next_due_at=None)
    failed = SendRecordFactory(recipient=RecipientFactory(lead=lead, status="contacted"), step=step, state="failed")
    neighbour_failed = SendRecordFactory(recipient=RecipientFactory(lead=neighbour), step=step, state="failed")

    result = lead_reset_progress(lead=lead)

    assert (result.current_step, result.state, result.next_due_at) == (1, Lead.State.IN_PROGRESS, NOW)
    assert not SendRecord.objects.filter(pk=failed.pk).exists()
    assert Recipient.objects.get(lead=lead).status == Recipient.Status.NOT_CONTACTED
    neighbour.refresh_from_db()
    assert (neighbour.current_step, neighbour.state) == (2, Lead.State.FINISHED)
    assert SendRecord.objects.filter(pk=neighbour_failed.pk).exists()
    assert Activity.objects.get().lead_id == lead.pk


# --- recipient statuses ----------------------------------------------------------------------------------


def test_bulk_status_update_changes_every_recipient_but_bounced_and_unsubscribed():
    campaign = CampaignFactory()
    lead = LeadFactory(campaign=campaign)
    for status in ("not_contacted", "not_contacted", "contacted", "bounced", "unsubscribed"):
        RecipientFactory(lead=lead, status=status)
    elsewhere = RecipientFactory(status="not_contacted")

    assert leads_bulk_update_status(campaign=campaign, status="contacted") == 2

    assert sorted(Recipient.objects.filter(lead=lead).values_list("status", flat=True)) == [
        "bounced", "contacted", "contacted", "contacted", "unsubscribed",
    ]  # fmt: skip
    assert Recipient.objects.get(pk=elsewhere.pk).status == "not_contacted"
    activity = Activity.objects.get()
    assert (activity.campaign_id, activity.detail) == (campaign.pk, {"recipients_to": "contacted", "count": 2})


def test_bulk_status_update_refuses_an_unknown_status_and_changes_nothing():
    recipient = RecipientFactory()
    with pytest.raises(ValidationError, match="'done' is not a recipient status"):
        leads_bulk_update_status(campaign=recipient.lead.campaign, status="done")
    assert Recipient.objects.get(pk=recipient.pk).status == "not_contacted"
    assert not Activity.objects.exists()


def test_status_rebuild_follows_the_send_records():
    campaign = CampaignFactory()
    step_1, step_2 = SequenceStepFactory(campaign=campaign), SequenceStepFactory(campaign=campaign)
    lead = LeadFactory(campaign=campaign)
    sent_twice = RecipientFactory(lead=lead)
    first = datetime(2025, 3, 1, 9, tzinfo=UTC)
    SendRecordFactory(recipient=sent_twice, step=step_1, state="sent", sent_at=first)
    SendRecordFactory(recipient=sent_twice, step=step_2, state="sent", sent_at=first + timedelta(days=2))
    bounced = RecipientFactory(lead=lead, status="contacted")
    SendRecordFactory(recipient=bounced, step=step_1, state="bounced")
    replied = RecipientFactory(lead=lead, status="replied")
    SendRecordFactory(recipient=replied, step=step_1, state="sent", sent_at=first)
    never_sent = RecipientFactory(lead=lead, status="contacted", last_step=1, last_contacted_at=first)
    SendRecordFactory(recipient=never_sent, step=step_1, state="failed")
    untouched = RecipientFactory(lead=lead)

    assert recipients_update_statuses(campaign=campaign) == 4

    rows = {r.pk: (r.status, r.last_contacted_at, r.last_step) for r in Recipient.objects.filter(lead=lead)}
    assert rows[sent_twice.pk] == ("contacted", first + timedelta(days=2), 2)
    assert rows[bounced.pk] == ("bounced", None, None)
    assert rows[replied.pk] == ("replied", first, 1)
    assert rows[never_sent.pk] == ("not_contacted", None, None)
    assert rows[untouched.pk] == ("not_contacted", None, None)
    assert recipients_update_statuses(campaign=campaign) == 0


def test_status_rebuild_for_one_campaign_leaves_the_others_alone():
    mine = SendRecordFactory(state="sent")
    theirs = SendRecordFactory(state="sent")

    assert recipients_update_statuses(campaign=mine.campaign) == 1

    assert Recipient.objects.get(pk=mine.recipient_id).status == "contacted"
    assert Recipient.objects.get(pk=theirs.recipient_id).status == "not_contacted"
    assert recipients_update_statuses() == 1


# --- suppression -----------------------------------------------------------------------------------------


def test_suppressing_an_address_or_a_domain_is_stored_lower_case_and_once():
    address = suppression_add(value="  Jane@Example.COM ", reason="asked")
    again = suppression_add(value="jane@example.com", reason="other")
    domain = suppression_add(value="@Spam.Example")

    assert (address.kind, address.value, address.reason) == ("address", "jane@example.com", "asked")
    assert again.pk == address.pk
    assert (domain.kind, domain.value) == ("domain", "spam.example")
    assert Suppression.objects.count() == 2


@pytest.mark.parametrize("value", ["jane@", "not a domain", ""])
def test_suppressing_something_that_is_neither_address_nor_domain_is_refused(value):
    with pytest.raises(ValidationError):
        suppression_add(value=value)
    assert not Suppression.objects.exists()


def test_suppression_matches_the_address_or_its_domain_in_one_query(django_assert_num_queries):
    suppression_add(value="jane@example.com")
    suppression_add(value="blocked.example")
    with django_assert_num_queries(1):
        assert suppression_matches(email="JANE@example.com")
    assert suppression_matches(email="anyone@blocked.example")
    assert not suppression_matches(email="joe@example.com")
    assert not suppression_matches(email="jane@other.example")


# --- accounts --------------------------------------------------------------------------------------------


def test_resetting_limits_clears_today_in_the_accounts_time_zone(now):
    # 12:00 UTC on 10 March is already 11 March in Kiritimati (UTC+14).
    account = SenderAccountFactory(time_zone="Pacific/Kiritimati", next_available_at=NOW + timedelta(hours=1),
                                   busy_until=NOW + timedelta(minutes=5), consecutive_failures=3)  # fmt: skip
    today = AccountDailyUsageFactory(account=account, day=date(2025, 3, 11), reserved=40)
    yesterday = AccountDailyUsageFactory(account=account, day=date(2025, 3, 10), reserved=50)
    setting = CampaignAccountFactory(account=account, usage_day=date(2025, 3, 11), usage_reserved=12)
    other_setting = CampaignAccountFactory(usage_reserved=7)

    account_reset_limits(account=account)

    today.refresh_from_db(), yesterday.refresh_from_db(), setting.refresh_from_db(), other_setting.refresh_from_db()
    assert (today.reserved, yesterday.reserved, setting.usage_reserved, other_setting.usage_reserved) == (0, 50, 0, 7)
    account.refresh_from_db()
    assert (account.next_available_at, account.busy_until, account.consecutive_failures) == (None, None, 0)
    activity = Activity.objects.get(account=account)
    assert activity.detail == {"limits_reset": True, "day": "2025-03-11", "reserved_before": 40}


def test_pausing_an_account_stores_the_reason_and_logs_account_paused():
    account = SenderAccountFactory()
    account_set_status(account=account, status="paused", reason="too many bounces")

    account.refresh_from_db()
    assert (account.status, account.status_reason) == ("paused", "too many bounces")
    activity = Activity.objects.get()
    assert (activity.kind, activity.account_id, activity.detail) == (
        Activity.Kind.ACCOUNT_PAUSED, account.pk, {"from": "active", "to": "paused"},
    )  # fmt: skip


def test_resuming_an_account_clears_its_failure_count():
    account = SenderAccountFactory(status="paused", status_reason="auth failed", consecutive_failures=5)
    account_set_status(account=account, status="active")

    account.refresh_from_db()
    assert (account.status, account.status_reason, account.consecutive_failures) == ("active", "", 0)
    assert Activity.objects.get().kind == Activity.Kind.STATUS_CHANGED


def test_an_unknown_account_status_is_refused():
    account = SenderAccountFactory()
    with pytest.raises(ValidationError, match="'sleeping' is not a sender account status"):
        account_set_status(account=account, status="sleeping")
    assert SenderAccount.objects.get(pk=account.pk).status == "active"


# --- key rotation ----------------------------------------------------------------------------------------


@pytest.fixture
def keys(settings):
    """Two Fernet keys; the test decides which are configured. The key cache is cleared around it."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    crypto._fernet.cache_clear()
    yield settings, old, new
    crypto._fernet.cache_clear()


def stored_ciphertext(account: SenderAccount) -> str:
    raw = Cast("smtp_password", output_field=TextField())
    return SenderAccount.objects.annotate(raw=raw).values_list("raw", flat=True).get(pk=account.pk)


def test_rotation_reencrypts_passwords_with_the_newest_key(keys):
    settings, old, new = keys
    account = SenderAccountFactory(smtp_password="s3cret")
    SenderAccountFactory(smtp_password="")
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    crypto._fernet.cache_clear()

    assert encrypted_fields_rotate()["campaigns.SenderAccount.smtp_password"] == 1

    assert Fernet(new.encode()).decrypt(stored_ciphertext(account).encode()) == b"s3cret"
    settings.FIELD_ENCRYPTION_KEYS = [new]
    crypto._fernet.cache_clear()
    assert SenderAccount.objects.get(pk=account.pk).smtp_password == "s3cret"


def test_rotation_without_the_old_key_says_which_account_it_cannot_read(keys):
    settings, old, new = keys
    account = SenderAccountFactory(smtp_password="s3cret")
    settings.FIELD_ENCRYPTION_KEYS = [new]
    crypto._fernet.cache_clear()

    with pytest.raises(ImproperlyConfigured, match=f"sender account {account.pk} cannot be decrypted"):
        encrypted_fields_rotate()
    assert Fernet(old.encode()).decrypt(stored_ciphertext(account).encode()) == b"s3cret"
