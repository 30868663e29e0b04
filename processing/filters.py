"""Query parameters of GET /emails (django-filter). Every parameter is optional; an empty one filters nothing; a bad
value is a 400 naming it."""

import django_filters

from emailsys.filters import IsoDateTimeFilter, choice_filter
from processing.models import EmailResult, InboundEmail


class EmailFilter(django_filters.FilterSet):
    classification = choice_filter(EmailResult.Classification, field_name="result__classification")
    status = choice_filter(InboundEmail.Status)
    received_after = IsoDateTimeFilter(
        field_name="received_at", lookup_expr="gte", help_text="ISO 8601, e.g. 2026-01-31T00:00:00Z (inclusive)."
    )
    received_before = IsoDateTimeFilter(field_name="received_at", lookup_expr="lt", help_text="ISO 8601 (exclusive).")
    sender = django_filters.CharFilter(field_name="sender", lookup_expr="iexact", help_text="The From address.")
    mailbox = django_filters.CharFilter(field_name="mailbox__address", lookup_expr="iexact", help_text="Its address.")

    class Meta:
        model = InboundEmail
        fields = ["classification", "status", "received_after", "received_before", "sender", "mailbox"]
