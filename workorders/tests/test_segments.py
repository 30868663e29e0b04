"""Segment rules: every kind, nesting, references, cycles and errors; evaluated in SQL, unsubscribed never in."""

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from workorders.models import Contact, Segment
from workorders.selectors import segment_count
from workorders.services.segments import (
    segment_contacts,
    segment_rule_contacts,
    segment_rule_validate,
    segment_save,
)
from workorders.tests.factories import ContactFactory, SegmentFactory

pytestmark = pytest.mark.django_db

VIP_REGISTERED = {"attribute_contains": {"path": "registered", "value": "VT25"}}


@pytest.fixture
def people() -> None:
    ContactFactory(email="ana@example.test", language="en", attributes={"registered": ["VT25", "VT24"], "vip": True})
    ContactFactory(email="bob@example.test", language="fr", attributes={"registered": ["VT24"]})
    ContactFactory(email="cy@example.test", language="en", attributes={"vip": "true", "registered": "VT25"})
    ContactFactory(email="dee@example.test", language="fr", attributes={})
    ContactFactory(email="fay@example.test", language="pt-br",
                   attributes={"registrations": {"VT25": {"weekend1": True}}, "vip": False})  # fmt: skip
    # Matches nearly every rule below, but unsubscribed: never eligible.
    everything = {"registered": ["VT25"], "vip": True, "registrations": {"VT25": {"weekend1": True}}}
    ContactFactory(email="eve@example.test", language="en", subscribed=False, attributes=everything)


def names(rule: Any) -> set[str]:
    return {email.split("@")[0] for email in segment_rule_contacts(rule=rule).values_list("email", flat=True)}


def saved(slug: str, rule: Any) -> Segment:
    return segment_save(segment=Segment(slug=slug, name=slug, rule=rule))


# --- each kind -----------------------------------------------------------------------------------------------


def test_always_is_every_subscribed_contact(people):
    assert names({"always": True}) == {"ana", "bob", "cy", "dee", "fay"}


def test_language_takes_one_code_or_a_list(people):
    assert names({"language": "fr"}) == {"bob", "dee"}
    assert names({"language": ["en", "pt-br"]}) == {"ana", "cy", "fay"}


def test_attribute_equals_compares_json_values_with_their_type(people):
    assert names({"attribute_equals": {"path": "vip", "value": True}}) == {"ana"}
    assert names({"attribute_equals": {"path": "vip", "value": "true"}}) == {"cy"}
    assert names({"attribute_equals": {"path": "registered", "value": ["VT24"]}}) == {"bob"}
    assert names({"attribute_equals": {"path": "registrations.VT25.weekend1", "value": True}}) == {"fay"}


def test_attribute_exists_at_the_top_and_nested(people):
    assert names({"attribute_exists": {"path": "vip"}}) == {"ana", "cy", "fay"}
    assert names({"attribute_exists": {"path": "registrations.VT25"}}) == {"fay"}
    assert names({"attribute_exists": {"path": "registrations.VT26"}}) == set()


def test_attribute_contains_finds_a_value_in_a_list_but_not_a_plain_equal_text(people):
    assert names(VIP_REGISTERED) == {"ana"}  # cy's "VT25" is text, not a list
    assert names({"attribute_contains": {"path": "registered", "value": "VT24"}}) == {"ana", "bob"}


def test_and_or_nest(people):
    rule = {
        "or": [
            {"and": [{"language": "en"}, {"attribute_exists": {"path": "vip"}}]},
            {"and": [{"language": "fr"}, {"attribute_contains": {"path": "registered", "value": "VT24"}}]},
        ]
    }
    assert names(rule) == {"ana", "cy", "bob"}
    assert names({"and": [{"language": "en"}]}) == {"ana", "cy"}


def test_always_stays_everything_inside_or_and_difference(people):
    # An empty Q() would vanish here and turn "always or X" into "X".
    assert names({"or": [{"always": True}, {"language": "fr"}]}) == {"ana", "bob", "cy", "dee", "fay"}
    assert names({"difference": {"from": {"language": "fr"}, "minus": {"always": True}}}) == set()


def test_difference_keeps_contacts_that_lack_the_attribute_the_minus_side_tests(people):
    # `NOT (attributes -> 'vip' = true)` is NULL for a contact without "vip" and would drop bob and dee.
    rule = {"difference": {"from": {"always": True}, "minus": {"attribute_equals": {"path": "vip", "value": True}}}}
    assert names(rule) == {"bob", "cy", "dee", "fay"}


def test_difference_nested_in_and_or(people):
    rule = {
        "and": [
            {"language": ["en", "fr"]},
            {"difference": {
                "from": {"or": [{"attribute_exists": {"path": "registered"}}, {"language": "fr"}]},
                "minus": {"or": [VIP_REGISTERED, {"attribute_equals": {"path": "registered", "value": "VT25"}}]},
            }},
        ]
    }  # fmt: skip
    assert names(rule) == {"bob", "dee"}


def test_in_segment_inlines_the_other_segments_rule_through_several_levels(people):
    saved("french", {"language": "fr"})
    saved("registered-vt24", {"attribute_contains": {"path": "registered", "value": "VT24"}})
    saved("french-vt24", {"and": [{"in_segment": "french"}, {"in_segment": "registered-vt24"}]})
    outer = saved("others", {"difference": {"from": {"always": True}, "minus": {"in_segment": "french-vt24"}}})

    assert names({"in_segment": "french-vt24"}) == {"bob"}
    assert {contact.email for contact in segment_contacts(segment=outer)} == {
        "ana@example.test", "cy@example.test", "dee@example.test", "fay@example.test",
    }  # fmt: skip


def test_segment_contacts_is_one_lazy_query_and_count_is_a_count(people, django_assert_num_queries):
    segment = saved("english", {"language": "en"})

    with django_assert_num_queries(1):  # the segments' rules; no contact is loaded
        contacts = segment_contacts(segment=segment)
    assert isinstance(contacts, QuerySet)
    with django_assert_num_queries(2) as captured:
        assert segment_count(segment=segment) == 2
    assert "COUNT(*)" in captured.captured_queries[-1]["sql"]


def test_unsubscribed_contacts_are_in_no_segment(people):
    everyone = saved("everyone", {"always": True})
    Contact.objects.filter(email="ana@example.test").update(subscribed=False)

    assert segment_count(segment=everyone) == 4
    assert not segment_contacts(segment=everyone).filter(subscribed=False).exists()


# --- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({}, "rule: a rule is a JSON object with exactly one key"),
        ([{"always": True}], "rule: a rule is a JSON object with exactly one key"),
        ({"always": True, "language": "en"}, "rule: a rule is a JSON object with exactly one key"),
        ({"everyone": True}, "rule: unknown rule kind 'everyone'"),
        ({"always": 1}, 'rule.always: write {"always": true}'),
        ({"language": "EN"}, "rule.language: 'EN' is not a lower-case language code"),
        ({"language": []}, "rule.language: expected a language code or a non-empty list"),
        ({"attribute_equals": {"path": "vip"}},
         'rule.attribute_equals: expected an object with exactly the keys "path" and "value"'),
        ({"attribute_exists": {"path": "a..b"}}, "rule.attribute_exists.path: 'a..b' has an empty part"),
        ({"attribute_exists": {"path": "a__b"}}, "rule.attribute_exists.path: 'a__b': a key must not contain '__'"),
        ({"attribute_exists": {"path": "list.0"}},
         "rule.attribute_exists.path: 'list.0': a key must not be only digits"),
        ({"and": []}, "rule.and: expected a non-empty list of rules"),
        ({"or": [{"always": True}, {"nope": 1}]}, "rule.or[1]: unknown rule kind 'nope'"),
        ({"difference": {"from": {"always": True}}}, 'rule.difference: expected {"from": rule, "minus": rule}'),
        ({"difference": {"from": {"always": True}, "minus": {"and": [{"language": ["en", 3]}]}}},
         "rule.difference.minus.and[0].language: 3 is not a lower-case language code"),
        ({"in_segment": ""}, "rule.in_segment: expected a segment's slug"),
        ({"in_segment": "ghost"}, "rule: in_segment 'ghost': no segment has this slug"),
    ],
)  # fmt: skip
def test_a_bad_rule_is_refused_with_a_message_naming_its_place(rule, message):
    with pytest.raises(ValidationError) as raised:
        saved("bad", rule)

    assert any(text.startswith(message) for text in raised.value.message_dict["rule"]), raised.value.messages
    assert not Segment.objects.exists()


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValidationError) as raised:
        segment_rule_validate(rule={"and": [{"language": "EN"}, {"nope": 1}, {"in_segment": "ghost"}]})

    assert len(raised.value.message_dict["rule"]) == 3


def test_a_segment_naming_itself_is_a_cycle():
    segment = saved("loop", {"always": True})
    segment.rule = {"or": [{"language": "en"}, {"in_segment": "loop"}]}

    with pytest.raises(ValidationError, match=r"cycle \(loop → loop\)"):
        segment_save(segment=segment)


def test_a_cycle_through_other_segments_is_refused_and_the_stored_rule_kept():
    saved("a", {"always": True})
    saved("b", {"in_segment": "a"})
    saved("c", {"and": [{"language": "en"}, {"in_segment": "b"}]})
    a = Segment.objects.get(slug="a")
    a.rule = {"difference": {"from": {"always": True}, "minus": {"in_segment": "c"}}}

    with pytest.raises(ValidationError, match=r"cycle \(a → c → b → a\)"):
        segment_save(segment=a)

    assert Segment.objects.get(slug="a").rule == {"always": True}


def test_a_cycle_written_past_validation_is_an_error_when_evaluated_not_a_recursion():
    SegmentFactory(slug="x", rule={"in_segment": "y"})
    y = SegmentFactory(slug="y", rule={"in_segment": "x"})

    with pytest.raises(ValidationError, match=r"cycle \(y → x → y\)"):
        segment_count(segment=y)


def test_a_stored_rule_naming_a_deleted_segment_is_an_error_when_evaluated():
    segment = SegmentFactory(rule={"and": [{"always": True}, {"in_segment": "gone"}]})

    with pytest.raises(ValidationError, match="in_segment 'gone': no segment has this slug"):
        segment_count(segment=segment)


def test_renaming_a_segment_that_others_refer_to_is_refused():
    french = saved("french", {"language": "fr"})
    saved("french-vip", {"and": [{"in_segment": "french"}, {"attribute_exists": {"path": "vip"}}]})
    french.slug = "francophone"

    with pytest.raises(ValidationError) as raised:
        segment_save(segment=french)

    assert raised.value.message_dict["slug"] == ["segments french-vip refer to 'french'; change their rules first"]


def test_attribute_keys_named_like_django_lookups_are_plain_keys_and_null_is_a_value():
    ContactFactory(email="odd@example.test", attributes={"contains": {"exact": 1}, "in": True, "none": None})
    ContactFactory(email="plain@example.test", attributes={})

    assert names({"attribute_equals": {"path": "contains.exact", "value": 1}}) == {"odd"}
    assert names({"attribute_equals": {"path": "in", "value": True}}) == {"odd"}
    assert names({"attribute_equals": {"path": "none", "value": None}}) == {"odd"}  # JSON null, not a missing key
    assert names({"attribute_exists": {"path": "contains.exact"}}) == {"odd"}
    assert names({"attribute_contains": {"path": "contains", "value": {"exact": 1}}}) == set()  # not a list
