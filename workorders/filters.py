"""Query parameters of the work-orders API's lists (django-filter), applied by `emailsys.filters.ListFilterBackend`.
Every parameter is optional; an empty one filters nothing."""

import django_filters
from django.db.models import QuerySet

from emailsys.filters import IdFilter, choice_filter, search_filter
from workorders.models import Contact, Event, MailingSend, Segment
from workorders.services.segments import segment_contacts


def _in_segment(queryset: QuerySet[Contact], name: str, value: int | None) -> QuerySet[Contact]:
    """The contacts a segment makes eligible now; a segment id that names none matches nothing. A rule that
    went bad raises ValidationError: a 400 with the rule's error."""
    if value is None:
        return queryset
    segment = Segment.objects.filter(pk=value).first()
    if segment is None:
        return queryset.none()
    return queryset.filter(pk__in=segment_contacts(segment=segment).values("pk"))


class ContactFilter(django_filters.FilterSet):
    language = django_filters.CharFilter(max_length=16, help_text="A language code: en, fr, pt-br…")
    subscribed = django_filters.BooleanFilter()
    segment = IdFilter(method=_in_segment, help_text="Only the contacts this segment (id) makes eligible now.")
    search = search_filter("email", "name")

    class Meta:
        model = Contact
        fields = ["language", "subscribed", "segment", "search"]


class SegmentFilter(django_filters.FilterSet):
    search = search_filter("slug", "name", "description")

    class Meta:
        model = Segment
        fields = ["search"]


class EventFilter(django_filters.FilterSet):
    code = django_filters.CharFilter(max_length=50)
    attendance = choice_filter(Event.Attendance)
    search = search_filter("code", "sub_event", "name")

    class Meta:
        model = Event
        fields = ["code", "attendance", "search"]


class MailingSendFilter(django_filters.FilterSet):
    work_order = IdFilter(field_name="work_order")
    state = choice_filter(MailingSend.State)

    class Meta:
        model = MailingSend
        fields = ["work_order", "state"]
