"""The workorders admin: bad input is a form error (never a 500), segment counts are shown, pages render."""

import pytest
from django.urls import reverse

from workorders.models import Contact, Event, Segment
from workorders.tests.factories import ContactFactory, EventFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def url(model, view: str, *args) -> str:
    return reverse(f"admin:workorders_{model._meta.model_name}_{view}", args=args)


def segment_form(**overrides) -> dict:
    return {"name": "French VIPs", "slug": "french-vips", "description": "", "rule": '{"language": "fr"}',
            **overrides}  # fmt: skip


def form_errors(response) -> dict:
    return response.context["adminform"].form.errors


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('{"and": [{"language": "fr"}, {"nope": true}]}', "rule.and[1]: unknown rule kind 'nope'"),
        ('{"in_segment": "french-vips"}', "rule: in_segment makes a cycle (french-vips → french-vips)"),
        ('{"in_segment": "ghost"}', "rule: in_segment 'ghost': no segment has this slug"),
        ("[1, 2]", "rule: a rule is a JSON object with exactly one key"),
        ('{"language": ', "Enter a valid JSON."),
    ],
)
def test_a_bad_rule_is_shown_as_an_error_on_the_rule_field(admin_client, rule, message):
    response = admin_client.post(url(Segment, "add"), segment_form(rule=rule))

    assert response.status_code == 200
    assert any(error.startswith(message) for error in form_errors(response)["rule"]), form_errors(response)
    assert message.split(" (")[0] in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')
    assert not Segment.objects.exists()


def test_a_good_rule_is_saved_and_the_count_is_shown_on_the_change_page_and_in_the_list(admin_client):
    ContactFactory(email="a@example.test", language="fr")
    ContactFactory(email="b@example.test", language="fr")
    ContactFactory(email="c@example.test", language="fr", subscribed=False)
    ContactFactory(email="d@example.test", language="en")

    response = admin_client.post(url(Segment, "add"), segment_form())

    assert response.status_code == 302, response.context and form_errors(response)
    segment = Segment.objects.get(slug="french-vips")
    assert segment.rule == {"language": "fr"}
    change = admin_client.get(url(Segment, "change", segment.pk)).content.decode()
    assert '<div class="readonly">2</div>' in change
    assert "a@example.test, b@example.test" in change
    changelist = admin_client.get(url(Segment, "changelist")).content.decode()
    assert '<td class="field-matching_contacts">2</td>' in changelist


def test_a_rule_that_went_bad_shows_its_error_instead_of_a_count(admin_client):
    segment = SegmentFactory(slug="orphan", rule={"in_segment": "deleted-since"})

    changelist = admin_client.get(url(Segment, "changelist"))
    change = admin_client.get(url(Segment, "change", segment.pk))

    assert changelist.status_code == change.status_code == 200
    assert "rule error: in_segment &#x27;deleted-since&#x27;: no segment has this slug" in changelist.content.decode()


def test_a_segment_another_rule_names_cannot_be_deleted(admin_client):
    french = SegmentFactory(slug="french", rule={"language": "fr"})
    SegmentFactory(slug="french-vip", rule={"and": [{"in_segment": "french"}, {"attribute_exists": {"path": "vip"}}]})

    response = admin_client.post(url(Segment, "delete", french.pk), {"post": "yes"})

    assert response.status_code == 200
    assert "used by the rule of french-vip" in response.content.decode()
    assert Segment.objects.filter(slug="french").exists()


def test_contact_form_stores_the_email_lower_case_and_refuses_a_duplicate(admin_client):
    data = {"email": "Ana@Example.TEST", "name": "Ana", "language": "PT-br", "subscribed": "on", "attributes": "{}"}

    assert admin_client.post(url(Contact, "add"), data).status_code == 302
    assert Contact.objects.get().email == "ana@example.test"
    assert Contact.objects.get().language == "pt-br"

    again = admin_client.post(url(Contact, "add"), {**data, "email": "ANA@example.test"})

    assert again.status_code == 200
    assert "Contact with this Email already exists." in str(form_errors(again))
    assert Contact.objects.count() == 1


def test_contact_list_searches_and_filters(admin_client):
    ContactFactory(email="ana@example.test", name="Ana", language="fr")
    ContactFactory(email="bob@example.test", name="Bob", language="en", subscribed=False)

    found = admin_client.get(url(Contact, "changelist"), {"q": "ana"}).content.decode()
    filtered = admin_client.get(url(Contact, "changelist"), {"language": "en", "subscribed__exact": "0"})

    assert "ana@example.test" in found and "bob@example.test" not in found
    assert list(filtered.context["cl"].queryset.values_list("email", flat=True)) == ["bob@example.test"]


def test_a_virtual_event_without_a_zoom_id_is_a_form_error(admin_client):
    data = {"code": "VT25", "sub_event": "online", "name": "Online", "attendance": "virtual", "zoom_id": "",
            "registration_link": "", "starts_at_0": "", "starts_at_1": ""}  # fmt: skip

    response = admin_client.post(url(Event, "add"), data)

    assert response.status_code == 200
    assert "A virtual event needs a Zoom id; an in-person event has none." in response.content.decode()
    assert not Event.objects.exists()
    assert admin_client.post(url(Event, "add"), {**data, "zoom_id": "987654321"}).status_code == 302


def test_every_page_renders(admin_client):
    rows = [ContactFactory(), SegmentFactory(), EventFactory()]
    for row in rows:
        model = type(row)
        assert admin_client.get(url(model, "changelist")).status_code == 200
        assert admin_client.get(url(model, "change", row.pk)).status_code == 200
        assert admin_client.get(url(model, "add")).status_code == 200
