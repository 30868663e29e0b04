"""factory_boy factories for contacts, segments and events. They write rows directly (no rule validation), so
a test can also build the bad states a validated save refuses; use `segment_save` to go through validation."""

import factory

from workorders import models


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Contact

    email = factory.Sequence(lambda n: f"contact{n}@example.test")
    name = factory.Sequence(lambda n: f"Contact {n}")
    language = "en"
    subscribed = True
    attributes = factory.LazyFunction(dict)


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Segment

    slug = factory.Sequence(lambda n: f"segment-{n}")
    name = factory.Sequence(lambda n: f"Segment {n}")
    rule = factory.LazyFunction(lambda: {"always": True})


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Event

    code = factory.Sequence(lambda n: f"EV{n}")
    sub_event = ""
    name = factory.Sequence(lambda n: f"Event {n}")
    attendance = models.Event.Attendance.IN_PERSON
    zoom_id = ""
    registration_link = "https://events.example.test/register"


class WorkOrderFactory(factory.django.DjangoModelFactory):
    """A work order for an in-person event, everyone eligible, English and French, sending through a local relay
    with no throttling (tests set `account__smtp_port` to their SMTP server's port). Steps: `workorder_steps_create`."""

    class Meta:
        model = models.WorkOrder

    event = factory.SubFactory(EventFactory)
    sub_event = ""
    stage = "invitation"
    audience = factory.SubFactory(SegmentFactory)
    account = factory.SubFactory("campaigns.tests.factories.SenderAccountFactory", daily_limit=10000)
    template = factory.SubFactory(
        "campaigns.tests.factories.EmailTemplateFactory",
        subject="{{ event_name }}",
        body_text="{% if language == 'fr' %}Bonjour{% else %}Hello{% endif %} {{ name }}, {{ event_name }} "
        "({{ zoom_id }}): {{ registration_link }}",
        body_html="",
    )
    subjects = factory.LazyFunction(lambda: {"en": "", "fr": "Invitation : {{ event_name }}"})
    testers = factory.LazyFunction(list)
