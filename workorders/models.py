"""Work orders, their steps, contacts and segments (issue 4).

Contacts are the audience of event mailings; segments say which contacts a mailing may reach, as a rule tree
stored in JSON (format and evaluation in `workorders.services.segments`); events are what the mailings are
about. Constraints make the wrong states impossible: one contact per (lower-case) email, attributes always a
JSON object, a virtual event always has a Zoom id and an in-person one never has.
"""

from django.contrib.postgres.indexes import GinIndex
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Func, Q, Value
from django.db.models.functions import Lower
from django.db.models.lookups import Exact

LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$"
validate_language = RegexValidator(
    LANGUAGE_PATTERN, "A language is a lower-case code such as en, fr or pt-br (ISO 639, optional region)."
)


def _json_type_is_object(field: str) -> Exact:
    """jsonb_typeof(field) = 'object': path lookups and merges assume a mapping at the top."""
    return Exact(Func(F(field), function="jsonb_typeof", output_field=models.CharField()), Value("object"))


class Contact(models.Model):
    """One person who may receive event mailings. The email is stored lower-case (one contact per address,
    whatever case a file used); `attributes` hold free data such as registrations, e.g.
    ``{"registered": ["VT2025"], "vip": true}``, which segment rules select on."""

    email = models.EmailField(max_length=254, help_text="Stored lower-case.")
    name = models.CharField(max_length=200, blank=True)
    language = models.CharField(
        max_length=16, default="en", validators=[validate_language], help_text="Preferred language: en, fr, pt-br…"
    )
    subscribed = models.BooleanField(
        default=True, help_text="Unsubscribed contacts are in no segment, whatever its rule says."
    )
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["email"], name="one_contact_per_email"),
            models.CheckConstraint(
                condition=Q(email=Lower("email")),
                name="contact_email_lowercase",
                violation_error_message="The email must be lower-case.",
            ),
            models.CheckConstraint(
                condition=Q(language__regex=LANGUAGE_PATTERN),
                name="contact_language_code",
                violation_error_message="A language is a lower-case code such as en, fr or pt-br.",
            ),
            models.CheckConstraint(
                condition=_json_type_is_object("attributes"),
                name="contact_attributes_object",
                violation_error_message="Attributes must be a JSON object ({...}).",
            ),
        ]
        # jsonb_ops serves the rules' containment (@>) and top-level key (?) tests.
        indexes = [GinIndex(fields=["attributes"], name="contact_attributes_gin")]

    def __str__(self) -> str:
        return self.email


class Segment(models.Model):
    """A named eligibility rule over contacts ("pool" in the system we replace). The rule is data, validated
    by `segment_rule_validate` (called from `clean`, so the admin shows errors on the field) and compiled to
    SQL by `segment_contacts`; other segments refer to this one by its slug."""

    slug = models.SlugField(max_length=100, unique=True, help_text="How other segments' rules refer to this one.")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    rule = models.JSONField(
        default=dict,
        help_text=(
            'One JSON object naming its kind, e.g. {"and": [{"attribute_contains": {"path": "registered", '
            '"value": "VT2025"}}, {"language": ["en", "fr"]}]}. Kinds: always, language, attribute_equals, '
            "attribute_exists, attribute_contains, in_segment, and, or, difference (README: Contacts and segments)."
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=_json_type_is_object("rule"),
                name="segment_rule_object",
                violation_error_message="A rule is a JSON object with one key naming its kind.",
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.slug

    def clean(self) -> None:
        from workorders.services.segments import segment_rule_validate  # services import models

        segment_rule_validate(rule=self.rule, segment=self)


class Event(models.Model):
    """What an event mailing is about. (code, sub_event) is the event's identity in work orders' mailing keys;
    a virtual event carries its Zoom id, an in-person one shows "In-Person" instead."""

    class Attendance(models.TextChoices):
        IN_PERSON = "in_person", "In-Person"
        VIRTUAL = "virtual", "Virtual"

    code = models.CharField(max_length=50, help_text="e.g. VT2025")
    sub_event = models.CharField(max_length=50, blank=True, help_text="e.g. weekend1; empty for a single event.")
    name = models.CharField(max_length=200)
    attendance = models.CharField(max_length=10, choices=Attendance.choices, default=Attendance.IN_PERSON)
    zoom_id = models.CharField(max_length=50, blank=True, help_text="Required for a virtual event, empty otherwise.")
    registration_link = models.URLField(max_length=500, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["code", "sub_event"], name="one_event_per_code_and_sub_event"),
            models.CheckConstraint(
                condition=(Q(attendance="virtual") & ~Q(zoom_id="")) | (Q(attendance="in_person") & Q(zoom_id="")),
                name="event_zoom_id_iff_virtual",
                violation_error_message="A virtual event needs a Zoom id; an in-person event has none.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code}/{self.sub_event}" if self.sub_event else self.code

    @property
    def zoom_label(self) -> str:
        """What templates show where the Zoom id goes."""
        return self.zoom_id if self.attendance == self.Attendance.VIRTUAL else self.Attendance.IN_PERSON.label
