"""Inbound mail reacting on campaigns (campaigns/services/inbound.py), through the real pipeline step: each
message is stored as the provider sync stores it and classified by processing's email_classify, whose
INBOUND_RESULT_HANDLERS hook runs the handler."""

import itertools
from datetime import UTC, date, datetime

import pytest
from django.utils import timezone

from campaigns.models import Activity, BounceRecord, Lead, Recipient, SenderAccount, SendRecord
from campaigns.services.inbound import account_bounce_rate
from campaigns.services.inbound_detect import away_until_parse, reply_own_text
from campaigns.services.suppressions import suppression_matches
from campaigns.tests.factories import (
    CampaignFactory,
    LeadFactory,
    RecipientFactory,
    SenderAccountFactory,
    SendRecordFactory,
    SequenceStepFactory,
)
from campaigns.tests.inbound_fixtures import (
    AUTO_REPLY_FIXTURES,
    BOUNCE_FIXTURES,
    UNSUBSCRIBE_FIXTURES,
    fixture_render,
)
from emailsys import clock
from processing.models import EmailResult, InboundEmail, Mailbox
from processing.providers import ProviderMessage
from processing.services.classify import email_classify
from processing.services.ingest import email_store

pytestmark = pytest.mark.django_db

_ids = itertools.count(1)


def deliver(account: SenderAccount, raw: bytes) -> InboundEmail:
    """The message arrives in the account's mailbox and is classified (the hook runs)."""
    mailbox, _ = Mailbox.objects.get_or_create(address=account.email.lower())
    number = next(_ids)
    message = ProviderMessage(email_id=f"m-{number}", history_id=number, raw=raw, internal_date=timezone.now())
    email = email_store(mailbox=mailbox, message=message, source=InboundEmail.Source.WEBHOOK)
    assert email is not None
    assert email_classify(email_pk=email.pk) is not None
    email.refresh_from_db()
    return email


def sent(*, account: SenderAccount | None = None, lead: Lead | None = None, email: str = "", step=None) -> SendRecord:
    """A campaign send to a recipient of a (new or given) lead, as the sending path leaves it."""
    account = account or SenderAccountFactory()
    lead = lead or LeadFactory(campaign=CampaignFactory(status="active"), sender_account=account)
    recipient = RecipientFactory(lead=lead, status=Recipient.Status.CONTACTED, **({"email": email} if email else {}))
    step = step or SequenceStepFactory(campaign=lead.campaign)
    return SendRecordFactory(recipient=recipient, account=account, state=SendRecord.State.SENT, step=step)


def render(name: str, record: SendRecord, **extra) -> bytes:
    return fixture_render(
        name, account=record.account.email, recipient=record.recipient.email, message_id=record.message_id, **extra
    )


def kinds(recipient: Recipient) -> list[str]:
    return list(Activity.objects.filter(recipient=recipient).order_by("id").values_list("kind", flat=True))


# --- replies ---------------------------------------------------------------------------------------------------


def test_a_reply_naming_our_message_id_marks_the_recipient_replied_and_stops_the_lead() -> None:
    record = sent()
    email = deliver(record.account, render("reply_quoted.eml", record))
    record.recipient.refresh_from_db()
    record.lead.refresh_from_db()
    assert record.recipient.status == Recipient.Status.REPLIED
    assert record.lead.state == Lead.State.STOPPED
    assert "replied" in record.lead.stop_reason
    replied = Activity.objects.get(kind=Activity.Kind.REPLIED, recipient=record.recipient)
    assert replied.detail["inbound_email"] == email.pk
    assert replied.detail["inbound_message_id"] == email.message_id
    assert not suppression_matches(email=record.recipient.email)  # the quoted footer is no unsubscribe request
    assert email.last_error == ""


def test_a_forwarded_reply_with_only_references_stops_the_lead_of_the_send_it_names() -> None:
    record = sent(email="pat@acme.test")
    deliver(record.account, render("reply_forwarded_references.eml", record))  # from sam.colleague@acme.test
    record.recipient.refresh_from_db()
    assert record.recipient.status == Recipient.Status.REPLIED
    assert Lead.objects.get(id=record.lead_id).state == Lead.State.STOPPED


def test_a_reply_without_our_headers_is_matched_by_the_senders_address() -> None:
    record = sent()
    other = sent(account=SenderAccountFactory(), email=record.recipient.email)  # same person, another account
    deliver(record.account, render("reply_no_headers.eml", record))
    record.recipient.refresh_from_db()
    other.recipient.refresh_from_db()
    assert record.recipient.status == Recipient.Status.REPLIED
    assert other.recipient.status == Recipient.Status.CONTACTED  # that account never received this mail


def test_mail_from_someone_we_never_wrote_to_changes_nothing() -> None:
    record = sent()
    raw = fixture_render("reply_no_headers.eml", account=record.account.email, recipient="stranger@else.test",
                         message_id="<not-ours@else.test>")  # fmt: skip
    email = deliver(record.account, raw)
    assert Lead.objects.get(id=record.lead_id).state == Lead.State.IN_PROGRESS
    assert not Activity.objects.filter(kind=Activity.Kind.REPLIED).exists()
    assert email.last_error == ""


def test_stop_on_domain_reply_stops_the_lead_when_a_colleague_answers_but_not_for_free_mail() -> None:
    account = SenderAccountFactory()
    campaign = CampaignFactory(status="active", stop_on_domain_reply=True)
    acme = sent(account=account, lead=LeadFactory(campaign=campaign), email="pat@acme.test")
    gmail = sent(account=account, lead=LeadFactory(campaign=campaign), email="pat@gmail.com")
    for colleague in ("boss@acme.test", "someone.else@gmail.com"):
        raw = fixture_render("reply_no_headers.eml", account=account.email, recipient=colleague,
                             message_id="<not-ours@x.test>")  # fmt: skip
        deliver(account, raw)
    assert Lead.objects.get(id=acme.lead_id).state == Lead.State.STOPPED
    assert Lead.objects.get(id=gmail.lead_id).state == Lead.State.IN_PROGRESS


def test_mail_for_a_mailbox_that_is_no_sender_account_costs_one_query(django_assert_num_queries) -> None:
    from campaigns.services.inbound import inbound_email_handle
    from processing.parsing import email_parse

    record = sent()
    mailbox = Mailbox.objects.create(address="support@elsewhere.test")
    raw = render("reply_quoted.eml", record)
    email = InboundEmail.objects.create(mailbox=mailbox, email_id="x", history_id=1, raw=raw,
                                        received_at=timezone.now())  # fmt: skip
    parsed = email_parse(raw)
    with django_assert_num_queries(1):
        inbound_email_handle(email=email, result=EmailResult(email=email), parsed=parsed)


# --- bounces ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [name for name, (_, hard) in BOUNCE_FIXTURES.items() if hard])
def test_a_hard_bounce_marks_the_recipient_bounced_suppresses_the_address_and_stops_the_lead(name: str) -> None:
    record = sent()
    email = deliver(record.account, render(name, record))
    record.recipient.refresh_from_db()
    assert record.recipient.status == Recipient.Status.BOUNCED
    assert suppression_matches(email=record.recipient.email)
    assert Lead.objects.get(id=record.lead_id).state == Lead.State.STOPPED  # its only recipient
    bounce = BounceRecord.objects.get(inbound_email=email)
    assert (bounce.kind, bounce.email, bounce.send_record_id) == ("hard", record.recipient.email, record.id)
    assert bounce.status.startswith("5.")
    assert Activity.Kind.BOUNCED in kinds(record.recipient)
    assert Activity.Kind.REPLIED not in kinds(record.recipient)  # Gmail's DSN has In-Reply-To: our send


@pytest.mark.parametrize("name", [name for name, (_, hard) in BOUNCE_FIXTURES.items() if not hard])
def test_a_soft_bounce_is_recorded_and_counted_but_suppresses_nothing(name: str) -> None:
    record = sent()
    email = deliver(record.account, render(name, record))
    record.recipient.refresh_from_db()
    assert record.recipient.status == Recipient.Status.CONTACTED
    assert not suppression_matches(email=record.recipient.email)
    assert Lead.objects.get(id=record.lead_id).state == Lead.State.IN_PROGRESS
    bounce = BounceRecord.objects.get(inbound_email=email)
    assert (bounce.kind, bounce.send_record_id) == ("soft", record.id)
    assert kinds(record.recipient) == [Activity.Kind.SOFT_BOUNCED]
    assert account_bounce_rate(account=record.account) == (1, 1)


def test_a_hard_bounce_found_only_by_our_send_header_when_the_message_id_was_rewritten() -> None:
    record = sent()
    raw = fixture_render("postfix_hard.eml", account=record.account.email, recipient=record.recipient.email,
                         message_id="<rewritten-by-relay@relay.test>",
                         send_reference=f"c.{record.message_id.strip('<>')}")  # fmt: skip
    email = deliver(record.account, raw)
    assert BounceRecord.objects.get(inbound_email=email).send_record_id == record.id


def test_a_hard_bounce_of_one_recipient_leaves_the_lead_going_for_the_others() -> None:
    record = sent()
    colleague = RecipientFactory(lead=record.lead, status=Recipient.Status.CONTACTED)
    deliver(record.account, render("exchange_hard.eml", record))
    assert Lead.objects.get(id=record.lead_id).state == Lead.State.IN_PROGRESS
    colleague.refresh_from_db()
    assert colleague.status == Recipient.Status.CONTACTED


def test_the_same_bounce_processed_again_counts_once() -> None:
    from campaigns.services.inbound import inbound_email_handle
    from processing.parsing import email_parse

    record = sent()
    email = deliver(record.account, render("gmail_soft.eml", record))
    inbound_email_handle(email=email, result=email.result, parsed=email_parse(bytes(email.raw)))  # a replay
    assert email_classify(email_pk=email.pk) is None  # a redelivered task: the result exists, nothing runs
    assert BounceRecord.objects.filter(email=record.recipient.email).count() == 1
    assert kinds(record.recipient) == [Activity.Kind.SOFT_BOUNCED]
    # A second report (another DSN) about the same send: two records, still one bounced send.
    deliver(record.account, render("postfix_soft.eml", record))
    assert account_bounce_rate(account=record.account) == (1, 1)


def test_an_account_whose_bounce_rate_over_its_last_100_sends_passes_5_percent_is_paused(settings) -> None:
    account = SenderAccountFactory()
    lead = LeadFactory(campaign=CampaignFactory(status="active"), sender_account=account)
    step = SequenceStepFactory(campaign=lead.campaign)
    records = [sent(account=account, lead=lead, step=step) for _ in range(120)]
    for record in records[-100:][:5]:  # 5 of the last 100: exactly 5 %, not more
        deliver(account, render("postfix_hard.eml", record))
    account.refresh_from_db()
    assert account.status == SenderAccount.Status.ACTIVE
    deliver(account, render("postfix_hard.eml", records[0]))  # older than the last 100: no change
    account.refresh_from_db()
    assert account.status == SenderAccount.Status.ACTIVE
    deliver(account, render("gmail_soft.eml", records[-1]))  # a soft one counts too: 6 %
    account.refresh_from_db()
    assert account.status == SenderAccount.Status.PAUSED
    assert "bounce rate 6% over the last 100 sends" in account.status_reason
    assert Activity.objects.filter(kind=Activity.Kind.ACCOUNT_PAUSED, account=account).count() == 1


# --- automatic answers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AUTO_REPLY_FIXTURES)
def test_an_automatic_answer_is_recorded_and_never_counted_as_a_reply(name: str) -> None:
    record = sent()
    deliver(record.account, render(name, record))
    record.recipient.refresh_from_db()
    assert record.recipient.status == Recipient.Status.CONTACTED
    assert Lead.objects.get(id=record.lead_id).state == Lead.State.IN_PROGRESS
    assert kinds(record.recipient) == [Activity.Kind.AUTO_REPLIED]


def test_away_until_a_date_postpones_the_next_step_with_the_setting(settings, monkeypatch) -> None:
    settings.AUTO_REPLY_POSTPONE = True
    monkeypatch.setattr(clock, "now", lambda: datetime(2026, 12, 3, 8, 0, tzinfo=UTC))
    record = sent()
    Lead.objects.filter(id=record.lead_id).update(next_due_at=datetime(2026, 12, 5, tzinfo=UTC))
    deliver(record.account, render("ooo_de.eml", record))  # "bis zum 15.12.2026"
    lead = Lead.objects.get(id=record.lead_id)
    assert lead.next_due_at == datetime(2026, 12, 16, tzinfo=UTC)
    assert lead.state == Lead.State.IN_PROGRESS


def test_without_the_setting_an_away_date_postpones_nothing(monkeypatch) -> None:
    monkeypatch.setattr(clock, "now", lambda: datetime(2026, 12, 3, 8, 0, tzinfo=UTC))
    record = sent()
    due = datetime(2026, 12, 5, tzinfo=UTC)
    Lead.objects.filter(id=record.lead_id).update(next_due_at=due)
    deliver(record.account, render("ooo_fr.eml", record))
    assert Lead.objects.get(id=record.lead_id).next_due_at == due


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I am out of the office until December 15, 2026.", date(2026, 12, 15)),
        ("back on 2026-12-14", date(2026, 12, 14)),
        ("Ich bin bis zum 15.12.2026 nicht im Büro", date(2026, 12, 15)),
        ("ich bin bis 15. Dezember abwesend", date(2026, 12, 15)),
        ("Je suis absent jusqu'au 15 décembre 2026.", date(2026, 12, 15)),
        ("Estoy fuera de la oficina hasta el 15 de diciembre de 2026", date(2026, 12, 15)),
        ("Estou de férias até 15/12/2026.", date(2026, 12, 15)),
        ("sono fuori ufficio fino al 15 dicembre 2026", date(2026, 12, 15)),
        ("Ik ben tot en met 15 december 2026 afwezig", date(2026, 12, 15)),
        ("I'm away until January 5th", date(2027, 1, 5)),  # no year: the next such day
        ("I am away until further notice", None),
        ("until 31.02.2026", None),  # no such day
        ("until 2025-01-01", None),  # past
    ],
)
def test_away_until_dates_in_several_languages_and_forms(text: str, expected: date | None) -> None:
    assert away_until_parse(text, today=date(2026, 12, 3)) == expected


# --- unsubscribe requests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNSUBSCRIBE_FIXTURES)
def test_an_unsubscribe_request_in_a_reply_suppresses_the_address_and_stops_the_lead(name: str) -> None:
    record = sent()
    other_campaign = sent(email=record.recipient.email)
    deliver(record.account, render(name, record))
    record.recipient.refresh_from_db()
    assert record.recipient.status == Recipient.Status.UNSUBSCRIBED
    assert suppression_matches(email=record.recipient.email)  # for every campaign and mailing
    lead = Lead.objects.get(id=record.lead_id)
    assert lead.state == Lead.State.STOPPED and "unsubscribe" in lead.stop_reason
    assert Activity.Kind.UNSUBSCRIBED in kinds(record.recipient)
    assert Activity.Kind.REPLIED not in kinds(record.recipient)
    assert Lead.objects.get(id=other_campaign.lead_id).state == Lead.State.IN_PROGRESS  # its sends are refused


def test_a_quoted_footer_is_not_the_authors_own_text() -> None:
    text = "Thanks!\n\nOn Thu, Dec 3, 2026 at 7:01 AM Sales <s@x.test> wrote:\n> Hi\n> Unsubscribe: http://h/u/x/\n"
    assert "nsubscribe" not in reply_own_text(text)


# --- the hook --------------------------------------------------------------------------------------------------


def test_a_failing_handler_is_recorded_on_the_message_and_the_classification_still_commits(settings) -> None:
    settings.INBOUND_RESULT_HANDLERS = [
        "campaigns.tests.test_inbound.handler_that_fails",
        *settings.INBOUND_RESULT_HANDLERS,
    ]
    record = sent()
    email = deliver(record.account, render("reply_quoted.eml", record))
    assert email.status == InboundEmail.Status.CLASSIFIED
    assert "handler_that_fails: RuntimeError: boom" in email.last_error
    assert EmailResult.objects.filter(email=email).exists()
    assert Recipient.objects.get(id=record.recipient_id).status == Recipient.Status.REPLIED  # the next handler ran


def handler_that_fails(**_kwargs) -> None:
    Recipient.objects.update(name="written before the error")  # rolled back with its savepoint
    raise RuntimeError("boom")


# --- the campaign page -----------------------------------------------------------------------------------------


def test_an_inbound_reply_and_a_bounce_reach_the_campaign_page_live() -> None:
    from campaigns.models import Campaign
    from emailsys.live import live_current

    record = sent()
    campaign = record.lead.campaign
    deliver(record.account, render("reply_no_headers.eml", record))
    version = Campaign.objects.values_list("live_version", flat=True).get(pk=campaign.pk)
    assert version >= 1
    assert live_current("campaign", campaign.pk)["data"]["leads"]["replied"] == 1
    bounced = sent(lead=LeadFactory(campaign=campaign))
    deliver(bounced.account, render("exim_hard.eml", bounced))
    assert Campaign.objects.values_list("live_version", flat=True).get(pk=campaign.pk) > version
    assert live_current("campaign", campaign.pk)["data"]["leads"]["stopped"] == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"From: MAILER-DAEMON@x.test\r\nSubject: Undelivered Mail\r\nContent-Type: multipart/report; "
        b"report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"\xff\xfe garbage: \r\n\r\nFinal-Recipient: nonsense\r\nAction: failed\r\nStatus: 9.9\r\n--b--\r\n",
        b"From: postmaster@x.test\r\nSubject: failure notice\r\nContent-Type: multipart/report; boundary=\r\n\r\n",
        b"From: <>\r\nSubject: Automatic reply\r\nAuto-Submitted: auto-replied\r\n\r\n" + b"\x00" * 100,
        b"\r\n\r\n\r\n",
    ],
    ids=["broken-dsn", "report-without-parts", "nul-bytes", "empty"],
)
def test_malformed_mail_to_an_account_is_classified_and_harms_nothing(raw: bytes) -> None:
    record = sent()
    email = deliver(record.account, raw)
    assert email.status == InboundEmail.Status.CLASSIFIED
    assert email.last_error == ""
    assert Lead.objects.get(id=record.lead_id).state == Lead.State.IN_PROGRESS


def test_an_unquoted_footer_link_in_any_language_is_not_an_unsubscribe_request() -> None:
    text = "Gerne, rufen Sie mich an.\n\nHallo,\nunser Angebot ...\nAbmelden: https://mail.example.test/x/abc?lang=de\n"
    assert "Abmelden" not in reply_own_text(text)
    assert "Gerne" in reply_own_text(text)


def test_a_bounce_reported_for_an_alias_of_the_address_we_wrote_to_bounces_that_recipient() -> None:
    record = sent()
    raw = render("sendmail_hard.eml", record).replace(
        f"Final-Recipient: RFC822; {record.recipient.email}".encode(), b"Final-Recipient: RFC822; mbox17@mx.test"
    )
    deliver(record.account, raw)
    record.recipient.refresh_from_db()
    assert record.recipient.status == Recipient.Status.BOUNCED
    assert suppression_matches(email=record.recipient.email)


def test_a_garbage_address_in_a_report_fails_alone() -> None:
    record = sent()
    block = f"Final-Recipient: rfc822; {record.recipient.email}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    garbage = "Final-Recipient: rfc822; @@@" + "x" * 300 + "@\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    raw = (
        f"From: MAILER-DAEMON@mx.test\r\nTo: {record.account.email}\r\nSubject: Undelivered Mail\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.test\r\n\r\n{garbage}\r\n{block}\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {record.message_id}\r\n\r\n--b--\r\n"
    ).encode()
    email = deliver(record.account, raw)
    assert email.last_error == ""
    assert BounceRecord.objects.filter(inbound_email=email).values_list("email", flat=True).get() == (
        record.recipient.email
    )
    assert Recipient.objects.get(id=record.recipient_id).status == Recipient.Status.BOUNCED
