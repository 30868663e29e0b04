"""Admin for contacts, segments and events. Segment rules are validated by the model's `clean` (the service
`segment_rule_validate`), so a bad rule is a form error on the field, never a server error; counts come from
`segment_count`, one COUNT query per segment shown, and a rule that went bad (a segment it names was
renamed away or deleted outside the admin) shows its error instead of a count."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet, URLField
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from workorders.models import Contact, Event, Segment
from workorders.services.segments import segment_contacts, segment_count, segment_referenced_by

SAMPLE_SIZE = 10


class ContactForm(forms.ModelForm):
    """Normalises as the CSV import does (lower-case email and language) before validation and constraints."""

    class Meta:
        model = Contact
        fields = ("email", "name", "language", "subscribed", "attributes")

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()

    def clean_language(self) -> str:
        return self.cleaned_data["language"].strip().lower()


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    form = ContactForm
    list_display = ("email", "name", "language", "subscribed", "updated_at")
    list_filter = ("language", "subscribed")
    search_fields = ("email", "name")
    ordering = ("email",)
    readonly_fields = ("created_at", "updated_at")


def _count_text(segment: Segment) -> str:
    try:
        return str(segment_count(segment=segment))
    except ValidationError as error:
        return f"rule error: {'; '.join(error.messages)}"


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "matching_contacts", "updated_at")
    search_fields = ("slug", "name", "description")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("matching_contacts", "sample_contacts", "used_by", "created_at", "updated_at")
    fields = ("name", "slug", "description", "rule", "matching_contacts", "sample_contacts", "used_by",
              "created_at", "updated_at")  # fmt: skip

    @admin.display(description="Matching contacts")
    def matching_contacts(self, segment: Segment) -> str:
        """Eligible now (subscribed and matching the saved rule)."""
        return "-" if segment.pk is None else _count_text(segment)

    @admin.display(description=f"First {SAMPLE_SIZE} matches")
    def sample_contacts(self, segment: Segment) -> str:
        if segment.pk is None:
            return "-"
        try:
            emails = list(segment_contacts(segment=segment).order_by("email").values_list("email", flat=True)[
                :SAMPLE_SIZE])  # fmt: skip
        except ValidationError:
            return "-"
        return format_html_join(", ", "{}", ((email,) for email in emails)) or "none"

    @admin.display(description="Used by")
    def used_by(self, segment: Segment) -> str:
        users = segment_referenced_by(slug=segment.slug) if segment.pk else []
        return format_html("{}", ", ".join(users)) if users else "-"

    def get_deleted_objects(self, objs: QuerySet | list[Model], request: HttpRequest) -> tuple:
        """A segment another rule names is protected: the admin refuses to delete it and says by whom."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        slugs = {segment.slug for segment in objs}
        for segment in objs:
            users = [slug for slug in segment_referenced_by(slug=segment.slug) if slug not in slugs]
            if users:
                protected = [*protected, f"Segment {segment.slug!r}: used by the rule of {', '.join(users)}"]
        return deleted, counts, perms_needed, protected


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("code", "sub_event", "name", "attendance", "zoom_label", "starts_at")
    list_filter = ("attendance",)
    search_fields = ("code", "sub_event", "name")
    formfield_overrides = {URLField: {"assume_scheme": "https"}}
    ordering = ("code", "sub_event")
    readonly_fields = ("created_at", "updated_at")
