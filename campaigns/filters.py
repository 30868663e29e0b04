"""The API's list filters (django-filter): query parameters by name, validated (a bad value is a 400 naming the
parameter), and described in the OpenAPI schema. The lists themselves come from `campaigns.selectors`."""

import django_filters
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from campaigns.models import Activity, Lead, SendRecord


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.NumberFilter):
    """An object's id: a whole number ("abc" or "1.5" is a 400)."""

    field_class = forms.IntegerField


class LeadFilter(django_filters.FilterSet):
    campaign = IdFilter(field_name="campaign_id")
    state = django_filters.ChoiceFilter(choices=Lead.State.choices)

    class Meta:
        model = Lead
        fields = ["campaign", "state"]


class ActivityFilter(django_filters.FilterSet):
    campaign = IdFilter(field_name="campaign_id")
    account = IdFilter(field_name="account_id")
    kind = django_filters.ChoiceFilter(choices=Activity.Kind.choices)

    class Meta:
        model = Activity
        fields = ["campaign", "account", "kind"]


class SendRecordFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(
        choices=SendRecord.State.choices, help_text="e.g. unknown: sends whose outcome an operator must decide"
    )
    campaign = IdFilter(field_name="campaign_id")
    account = IdFilter(field_name="account_id")

    class Meta:
        model = SendRecord
        fields = ["state", "campaign", "account"]
