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
