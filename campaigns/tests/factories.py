"""factory_boy factories for every campaigns model. Defaults make a valid row with the fewest surprises:
accounts send to a local relay with no wait and a roomy daily limit; leads are in progress and due now;
a SendRecordFactory(state="sent") gets the sent_at the database requires; a claimed or handed-over one a claim
token and a lease that is already over (its worker is gone unless the test says otherwise), a handed-over one its
handed_over_at.
"""

import uuid

import factory
from django.db.models import Max

from campaigns import models
from emailsys import clock


def _next_value(queryset, field: str, start: int) -> int:
    highest = queryset.aggregate(highest=Max(field))["highest"]
    return start if highest is None else highest + 1


class EmailTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.EmailTemplate

    name = factory.Sequence(lambda n: f"template-{n}")
    subject = "Hello {{ first_name }}"
    body_text = "Hi {{ first_name }},\n\nA short note from {{ sender_name }}."
    body_html = ""


class SenderAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.SenderAccount

    email = factory.Sequence(lambda n: f"sender{n}@emailsys.test")
    from_name = factory.Sequence(lambda n: f"Sender {n}")
    smtp_host = "127.0.0.1"
    smtp_port = 1025
    security = models.SenderAccount.Security.NONE
    time_zone = "UTC"
    daily_limit = 100
    min_wait_seconds = 0
    jitter_seconds = 0


class AccountDailyUsageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.AccountDailyUsage

    account = factory.SubFactory(SenderAccountFactory)
    day = factory.LazyFunction(lambda: clock.now().date())
    reserved = 0


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    status = models.Campaign.Status.DRAFT
    time_zone = "UTC"


class CampaignAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.CampaignAccount

    campaign = factory.SubFactory(CampaignFactory)
    account = factory.SubFactory(SenderAccountFactory)


class SequenceStepFactory(factory.django.DjangoModelFactory):
    """Order defaults to the campaign's next free one (1, 2, ...)."""

    class Meta:
        model = models.SequenceStep

    campaign = factory.SubFactory(CampaignFactory)
    order = factory.LazyAttribute(lambda o: _next_value(models.SequenceStep.objects.filter(campaign=o.campaign),
                                                        "order", 1))  # fmt: skip
    delay_seconds = 0
    template = factory.SubFactory(EmailTemplateFactory)
    threaded = False


class LeadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Lead

    campaign = factory.SubFactory(CampaignFactory)
    external_id = factory.Sequence(lambda n: f"lead-{n}")
    state = models.Lead.State.IN_PROGRESS
    current_step = 1
    next_due_at = factory.LazyFunction(lambda: clock.now())


class RecipientFactory(factory.django.DjangoModelFactory):
    """Position defaults to the lead's next free one (0, 1, ...)."""

    class Meta:
        model = models.Recipient

    lead = factory.SubFactory(LeadFactory)
    position = factory.LazyAttribute(lambda o: _next_value(models.Recipient.objects.filter(lead=o.lead),
                                                           "position", 0))  # fmt: skip
    email = factory.Sequence(lambda n: f"person{n}@example.test")
    first_name = factory.Sequence(lambda n: f"First{n}")
    last_name = "Person"
    name = factory.LazyAttribute(lambda o: f"{o.first_name} {o.last_name}")
    company_name = "Example Inc"


IN_FLIGHT = (models.SendRecord.State.CLAIMED, models.SendRecord.State.HANDED_OVER)


class SendRecordFactory(factory.django.DjangoModelFactory):
    """Lead and campaign follow the recipient; the step is a new step of that campaign unless given."""

    class Meta:
        model = models.SendRecord

    recipient = factory.SubFactory(RecipientFactory)
    lead = factory.SelfAttribute("recipient.lead")
    campaign = factory.SelfAttribute("lead.campaign")
    step = factory.SubFactory(SequenceStepFactory, campaign=factory.SelfAttribute("..campaign"))
    account = factory.SubFactory(SenderAccountFactory)
    state = models.SendRecord.State.CLAIMED
    claim_token = factory.LazyAttribute(lambda o: uuid.uuid4() if o.state in IN_FLIGHT else None)
    claimed_until = factory.LazyAttribute(lambda o: clock.now() if o.state in IN_FLIGHT else None)
    handed_over_at = factory.LazyAttribute(
        lambda o: clock.now() if o.state == models.SendRecord.State.HANDED_OVER else None
    )
    message_id = factory.Sequence(lambda n: f"<{n}.factory@emailsys.test>")
    subject = "Hello"
    sent_at = factory.LazyAttribute(lambda o: clock.now() if o.state == models.SendRecord.State.SENT else None)


class DryRunRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.DryRunRecord

    recipient = factory.SubFactory(RecipientFactory)
    campaign = factory.SelfAttribute("recipient.lead.campaign")
    step = factory.SubFactory(SequenceStepFactory, campaign=factory.SelfAttribute("..campaign"))
    account = factory.SubFactory(SenderAccountFactory)
    subject = "Hello"


class OperatorTestSendFactory(factory.django.DjangoModelFactory):
    __test__ = False  # not a pytest test class

    class Meta:
        model = models.OperatorTestSend

    step = factory.SubFactory(SequenceStepFactory)
    account = factory.SubFactory(SenderAccountFactory)
    to_email = "operator@example.test"


class SuppressionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Suppression

    kind = models.Suppression.Kind.ADDRESS
    value = factory.Sequence(lambda n: f"suppressed{n}@example.test")


class ActivityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Activity

    created_at = factory.LazyFunction(lambda: clock.now())
    kind = models.Activity.Kind.SENT
