"""The database refuses the wrong states itself, whatever code writes the row."""

import pytest
from django.db import IntegrityError

from workorders.models import Contact, Event, Segment
from workorders.services.templating import event_template_context
from workorders.tests.factories import ContactFactory, EventFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "Mixed@Example.test"},
        {"language": "English"},
        {"attributes": ["a list"]},
        {"attributes": "text"},
    ],
)
def test_contact_rows_the_database_refuses(fields):
    with pytest.raises(IntegrityError):
        Contact.objects.create(**{"email": "ok@example.test", **fields})


def test_one_contact_per_email():
    ContactFactory(email="same@example.test")
    with pytest.raises(IntegrityError):
        ContactFactory(email="same@example.test")


def test_a_segment_rule_must_be_an_object_in_the_database():
    with pytest.raises(IntegrityError):
        Segment.objects.create(slug="list", name="list", rule=[{"always": True}])


def test_a_virtual_event_without_a_zoom_id_is_refused():
    with pytest.raises(IntegrityError):
        EventFactory(attendance=Event.Attendance.VIRTUAL, zoom_id="")


def test_an_in_person_event_with_a_zoom_id_is_refused():
    with pytest.raises(IntegrityError):
        EventFactory(attendance=Event.Attendance.IN_PERSON, zoom_id="123456789")


def test_one_event_per_code_and_sub_event():
    EventFactory(code="VT25", sub_event="weekend1")
    EventFactory(code="VT25", sub_event="weekend2")
    with pytest.raises(IntegrityError):
        EventFactory(code="VT25", sub_event="weekend1")


def test_templates_see_in_person_where_a_virtual_event_shows_its_zoom_id():
    in_person = EventFactory(code="VT25", sub_event="retreat", name="Retreat")
    virtual = EventFactory(code="VT25", sub_event="online", attendance=Event.Attendance.VIRTUAL, zoom_id="987654321")

    assert event_template_context(event=in_person)["zoom_id"] == "In-Person"
    assert event_template_context(event=in_person)["in_person"] is True
    assert event_template_context(event=virtual)["zoom_id"] == "987654321"
    assert event_template_context(event=virtual)["in_person"] is False
