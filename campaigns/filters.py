"""Query parameters of the campaigns API's lists (django-filter), applied to the selectors' lists by
`emailsys.filters.ListFilterBackend`. Every parameter is optional; an empty one filters nothing."""

import django_filters

from campaigns.models import Activity, EmailTemplate, Lead, SendRecord, SequenceStep, Suppression
from emailsys.filters import IdFilter, choice_filter, search_filter


class LeadFilter(django_filters.FilterSet):
    campaign = IdFilter(field_name="campaign")
    state = choice_filter(Lead.State)

    class Meta:
        model = Lead
        fields = ["campaign", "state"]


class ActivityFilter(django_filters.FilterSet):
    campaign = IdFilter(field_name="campaign")
    account = IdFilter(field_name="account")
    kind = choice_filter(Activity.Kind)

    class Meta:
        model = Activity
        fields = ["campaign", "account", "kind"]


class SendRecordFilter(django_filters.FilterSet):
    state = choice_filter(SendRecord.State, help_text="e.g. unknown: sends whose outcome an operator must decide")
    campaign = IdFilter(field_name="campaign")
    account = IdFilter(field_name="account")

    class Meta:
        model = SendRecord
        fields = ["state", "campaign", "account"]


class EmailTemplateFilter(django_filters.FilterSet):
    search = search_filter("name", "subject")

    class Meta:
        model = EmailTemplate
        fields = ["search"]


class SequenceStepFilter(django_filters.FilterSet):
    campaign = IdFilter(field_name="campaign")
    template = IdFilter(field_name="template")

    class Meta:
        model = SequenceStep
        fields = ["campaign", "template"]


class SuppressionFilter(django_filters.FilterSet):
    kind = choice_filter(Suppression.Kind)
    search = search_filter("value", "reason")

    class Meta:
        model = Suppression
        fields = ["kind", "search"]
