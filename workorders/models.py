"""Work orders, their steps, contacts and segments (issue 4).

Contacts are the audience of event mailings; segments say which contacts a mailing may reach, as a rule tree
stored in JSON (format and evaluation in `workorders.services.segments`); events are what the mailings are
about. Constraints make the wrong states impossible: one contact per (lower-case) email, attributes always a
JSON object, a virtual event always has a Zoom id and an in-person one never has.
"""

import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Func, Q, Value
from django.db.models.functions import Lower
from django.db.models.lookups import Exact

from campaigns.models import EmailTemplate, SendAttempt, SenderAccount
from workorders.validators import (
    LANGUAGE_PATTERN,
    segment_rule_errors,
    subjects_errors,
    testers_errors,
    validate_language,
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
    unsubscribe_token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [("import_contacts", "Can import contacts")]
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
    by `clean` (so the admin shows errors on the field) and compiled to SQL by `segment_contacts`; other segments
    refer to this one by its slug."""

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
        """The rule against the saved segments (`segment_rule_errors`): its shape, the segments it names, a cycle
        through this one, and renaming a segment others refer to; every problem at once."""
        stored = list(Segment.objects.values_list("pk", "slug", "rule"))
        stored_slug = next((slug for pk, slug, _ in stored if pk == self.pk), None) if self.pk is not None else None
        errors = segment_rule_errors(rule=self.rule, slug=self.slug, stored_slug=stored_slug,
                                     stored_rules={slug: rule for _, slug, rule in stored})  # fmt: skip
        if errors:
            raise ValidationError(errors)


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


class WorkOrder(models.Model):
    """One event mailing run as a pipeline of steps (Count → Prepare → Dry-Run → Test → Send [→ Send-Continuously]).

    The mailing key is (event code, sub-event, stage): a contact gets one email per key, whichever work order
    sends it (`MailingSend`'s unique constraint). `subjects` maps each enabled language to its subject (empty:
    the template's). Only the holder of the lease (`lock_owner` until `lock_expires_at`) processes the work
    order; `stop_requested` is polled by that holder (README: Work orders). Unless `auto_approve`, the pipeline
    stops after Test in *awaiting approval* until an operator approves Send (`approved_at`, cleared when Test
    runs again), so the dry-run list and the test emails can be looked at first.
    """

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        QUEUED = "queued", "Queued"
        WORKING = "working", "Working"
        SLEEPING = "sleeping", "Sleeping"
        AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
        INTERRUPTED = "interrupted", "Interrupted"
        COMPLETE = "complete", "Complete"
        ERROR = "error", "Error"

    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="work_orders")
    sub_event = models.CharField(max_length=50, blank=True, help_text="Part of the mailing key; usually the event's.")
    stage = models.CharField(max_length=50, help_text="e.g. invitation, reminder; part of the mailing key.")
    audience = models.ForeignKey(Segment, on_delete=models.PROTECT, related_name="work_orders")
    account = models.ForeignKey(SenderAccount, on_delete=models.PROTECT, related_name="work_orders")
    template = models.ForeignKey(EmailTemplate, on_delete=models.PROTECT, related_name="work_orders")
    subjects = models.JSONField(
        default=dict, help_text='Enabled languages and their subjects, e.g. {"en": "Join us", "fr": "Rejoignez-nous"}.'
    )
    from_name = models.CharField(max_length=200, blank=True, help_text="Empty: the account's name.")
    reply_to = models.EmailField(blank=True)
    testers = models.JSONField(
        default=list, blank=True, help_text='Addresses the Test step sends to, e.g. ["a@x.org"].'
    )
    salutation_by_name = models.BooleanField(default=True)
    send_continuously = models.BooleanField(default=False)
    send_until = models.DateTimeField(null=True, blank=True)
    send_interval_seconds = models.PositiveIntegerField(default=3600)
    burst_size = models.PositiveIntegerField(default=0, help_text="Pause after this many emails (0: no bursts).")
    burst_pause_seconds = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")  # fmt: skip
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.READY)
    auto_approve = models.BooleanField(
        default=False,
        help_text="Send right after Test, without waiting for an operator's Approve (recurring mailings opt out).",
    )
    approved_at = models.DateTimeField(null=True, blank=True, help_text="When Send was approved since Test last ran.")
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")  # fmt: skip
    stop_requested = models.BooleanField(default=False)
    resume_at = models.DateTimeField(null=True, blank=True, help_text="A sleeping work order is resumed then.")
    lock_owner = models.CharField(max_length=200, blank=True)
    lock_acquired_at = models.DateTimeField(null=True, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)
    swept_at = models.DateTimeField(null=True, blank=True, help_text="When the sweeper last re-dispatched it.")
    live_version = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="Incremented with each live change (emailsys.live): pages keep the newest."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        permissions = [
            ("run_workorder", "Can start, stop and restart work orders"),
            ("unlock_workorder", "Can unlock work orders"),
            ("approve_workorder", "Can approve a work order's Send"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=_json_type_is_object("subjects") & ~Q(subjects={}),
                name="workorder_subjects_nonempty_object",
                violation_error_message='Enable at least one language: subjects is a JSON object such as {"en": ""}.',
            ),
            models.CheckConstraint(
                condition=Exact(
                    Func(F("testers"), function="jsonb_typeof", output_field=models.CharField()), Value("array")
                ),
                name="workorder_testers_list",
                violation_error_message="Testers must be a JSON list of addresses.",
            ),  # fmt: skip
            models.CheckConstraint(
                condition=Q(send_continuously=False) | (Q(send_until__isnull=False) & Q(send_interval_seconds__gte=1)),
                name="workorder_continuous_needs_until_and_interval",
                violation_error_message="Sending continuously needs 'send until' and an interval of at least 1 s.",
            ),
            models.CheckConstraint(
                condition=(Q(lock_owner="") & Q(lock_expires_at__isnull=True))
                | (~Q(lock_owner="") & Q(lock_expires_at__isnull=False) & Q(lock_acquired_at__isnull=False)),
                name="workorder_lock_owner_iff_expiry",
            ),
            models.CheckConstraint(
                condition=Q(burst_size=0) | Q(burst_pause_seconds__gte=1),
                name="workorder_burst_has_a_pause",
                violation_error_message="A burst size needs a pause of at least 1 s.",
            ),
        ]
        indexes = [models.Index(fields=["status", "lock_expires_at"], name="workorder_status_lease")]

    def __str__(self) -> str:
        return f"{self.event.name or self.event.code}: {self.stage} (work order {self.pk})"

    @property
    def languages(self) -> list[str]:
        return sorted(self.subjects or {}) if isinstance(self.subjects, dict) else []

    def clean(self) -> None:
        """By field: languages and subjects, testers' addresses, and the settings that only go together (the check
        constraints refuse the same rows; this says why, on the form's fields)."""
        errors = {"subjects": subjects_errors(self.subjects), "testers": testers_errors(self.testers)}
        if self.send_continuously and not self.send_until:
            errors["send_until"] = ["Sending continuously needs a 'send until' time."]
        if self.burst_size and not self.burst_pause_seconds:
            errors["burst_pause_seconds"] = ["A burst size needs a pause of at least 1 s."]
        if any(errors.values()):
            raise ValidationError({field: messages for field, messages in errors.items() if messages})


class WorkOrderStep(models.Model):
    """One step of a work order: its status, message, progress and result (counts, stored file names)."""

    class Name(models.TextChoices):
        COUNT = "count", "Count"
        PREPARE = "prepare", "Prepare"
        DRY_RUN = "dry_run", "Dry-Run"
        TEST = "test", "Test"
        SEND = "send", "Send"
        SEND_CONTINUOUSLY = "send_continuously", "Send-Continuously"

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        WORKING = "working", "Working"
        SLEEPING = "sleeping", "Sleeping"
        COMPLETE = "complete", "Complete"
        ERROR = "error", "Error"
        INTERRUPTED = "interrupted", "Interrupted"
        EXCEPTION = "exception", "Exception"

    work_order = models.ForeignKey(WorkOrder, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=20, choices=Name.choices)
    order = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.READY)
    message = models.TextField(blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    runs = models.PositiveIntegerField(default=0, help_text="How many times the step was started afresh.")
    result = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["work_order", "order"]
        constraints = [
            models.UniqueConstraint(fields=["work_order", "name"], name="one_step_per_name"),
            models.UniqueConstraint(fields=["work_order", "order"], name="one_step_per_order_in_workorder"),
            models.CheckConstraint(
                condition=Q(status="ready") | Q(started_at__isnull=False), name="step_started_unless_ready"
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["complete", "error", "exception", "interrupted"]) | Q(ended_at__isnull=False),
                name="step_ended_when_finished",
            ),
        ]

    def __str__(self) -> str:
        return f"work order {self.work_order_id}, {self.get_name_display()} ({self.get_status_display()})"


class MailingSend(SendAttempt):
    """One email of an event mailing to one address, with the campaign engine's exactly-once protocol and states:
    CLAIMED committed before SMTP, HANDED_OVER after the 354 and before the content, the verdict after. A real
    send is unique per (contact, mailing key) whichever work order sends it; a test send (`is_test`) is unique
    per (work order, address, Test run) and never counts as the mailing."""

    work_order = models.ForeignKey(WorkOrder, on_delete=models.CASCADE, related_name="sends")
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.CASCADE, related_name="mailing_sends")
    email = models.EmailField(max_length=254)
    event_code = models.CharField(max_length=50)
    sub_event = models.CharField(max_length=50, blank=True)
    stage = models.CharField(max_length=50)
    language = models.CharField(max_length=16)
    is_test = models.BooleanField(default=False)
    test_run = models.PositiveIntegerField(null=True, blank=True)
    account = models.ForeignKey(SenderAccount, null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta(SendAttempt.Meta):
        permissions = [("resolve_mailingsend", "Can resolve mailing sends whose outcome is unknown")]
        constraints = [
            *SendAttempt.Meta.constraints,
            models.UniqueConstraint(
                fields=["contact", "event_code", "sub_event", "stage"],
                condition=Q(is_test=False),
                name="one_mailing_per_contact_and_key",
            ),
            models.UniqueConstraint(
                fields=["work_order", "email", "language", "test_run"],
                condition=Q(is_test=True),
                name="one_test_send_per_address_language_run",
            ),
            models.CheckConstraint(
                condition=(Q(is_test=False) & Q(contact__isnull=False) & Q(test_run__isnull=True))
                | (Q(is_test=True) & Q(test_run__isnull=False)),
                name="mailing_send_real_has_contact_test_has_run",
            ),
            models.CheckConstraint(
                condition=~Q(state="sent") | (Q(sent_at__isnull=False) & ~Q(message_id="")),
                name="mailing_sent_has_proof",
            ),
        ]
        indexes = [
            models.Index(fields=["work_order", "state"], name="mailing_send_workorder_state"),
            models.Index(fields=["event_code", "sub_event", "stage", "state"], name="mailing_send_key_state"),
            # Inbound mail: a bounce's quoted headers name our Message-ID.
            models.Index(fields=["message_id"], name="mailing_send_message_id", condition=~Q(message_id="")),
        ]

    def __str__(self) -> str:
        return f"{self.email} via work order {self.work_order_id} ({self.get_state_display()})"
