"""List filters of every JSON API: django-filter FilterSets, applied to list endpoints only
(`ListFilterBackend`, REST_FRAMEWORK["DEFAULT_FILTER_BACKENDS"]). `IdFilter` and `choice_filter` give query
parameters the same error texts everywhere.

DRF imports this module while it defines its generic views: it must not import views (emailsys.api does).
"""

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework.request import Request


class ListFilterBackend(DjangoFilterBackend):
    """The view's `filterset_class` applies to its list only: a detail URL or an action on one row ignores the
    query string, as it always did. A bad value is a 400 naming the parameter."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        if getattr(view, "action", None) != "list":
            return queryset
        return super().filter_queryset(request, queryset, view)


class _IdField(forms.Field):
    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        try:
            return int(value)
        except ValueError:
            raise ValidationError(f"{value!r} is not an id (a whole number).", code="invalid") from None


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.Filter):
    """Rows whose `field_name` (a foreign key) is this id; an id that names no row matches nothing."""

    field_class = _IdField


class _UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 time in UTC: PostgreSQL refuses an offset beyond ±15:59 (a DataError, a 500) that Python and
    ISO 8601 accept (`2026-01-31T00:00+18:35`); converted, any offset compares right."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise ValidationError(f"{value!r} is out of the range of dates.", code="invalid") from None


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO 8601 filter, with any time zone offset (`_UtcIsoDateTimeField`)."""

    field_class = _UtcIsoDateTimeField


def choice_filter(choices: type, **kwargs: Any) -> django_filters.ChoiceFilter:
    """One value of a TextChoices; another value is a 400 listing the allowed ones."""
    allowed = ", ".join(choices.values)
    return django_filters.ChoiceFilter(
        choices=choices.choices, error_messages={"invalid_choice": f"%(value)r is not one of: {allowed}."}, **kwargs
    )


def search_filter(*fields: str, help_text: str = "") -> django_filters.CharFilter:
    """`?search=text`: rows where any of `fields` contains the text, whatever its case (empty: no filter)."""

    def search(queryset: QuerySet, name: str, value: str) -> QuerySet:
        condition = Q()
        for field in fields:
            condition |= Q(**{f"{field}__icontains": value})
        return queryset.filter(condition)

    return django_filters.CharFilter(
        method=search, max_length=200, help_text=help_text or f"Text in {', '.join(fields)} (any case)."
    )
