"""Form fields a person can fill, shared by every app's admin: durations typed as "2d 4h" or "90m", send days
as weekday checkboxes, time zones as a searchable list, and repeatable rows for lists and per-language maps (a
work order's testers and subjects) instead of JSON textareas.

Each field still accepts what the forms took before (a number of seconds, a JSON list or object posted under
the field's own name), so scripts and tests that post the old values keep working. The small script that makes
the rows repeatable and the time-zone list searchable is a static file (emailsys/forms.js): the
Content-Security-Policy allows no inline script; templates/admin/base_site.html loads it (and forms.css) on every
admin page, and every widget works without it (extra blank rows, a plain select).
"""

import json
import re
import zoneinfo
from functools import cache
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# --- durations ---------------------------------------------------------------------------------------------

UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_DURATION_PART = re.compile(r"(\d+)\s*([dhms])", re.IGNORECASE)
DURATION_HELP = 'e.g. "2d 4h", "90m", "45s" (d days, h hours, m minutes, s seconds); a bare number is seconds.'


def duration_parse(text: str) -> int:
    """Seconds in "2d 4h", "1h 30m", "90m", "45s" or "240" (bare: seconds); ValueError says what is wrong."""
    cleaned = (text or "").strip().lower()
    if cleaned.isdigit():
        return int(cleaned)
    parts = _DURATION_PART.findall(cleaned)
    rest = _DURATION_PART.sub("", cleaned).replace(",", "").strip()
    if not parts or rest:
        raise ValueError(f"{text!r} is not a duration: write it as {DURATION_HELP}")
    units = [unit for _, unit in parts]
    if len(set(units)) != len(units):
        raise ValueError(f"{text!r} names a unit twice: write each of d, h, m, s at most once.")
    factor = dict(UNITS)
    return sum(int(number) * factor[unit] for number, unit in parts)


def duration_format(seconds: int | None) -> str:
    """The inverse of `duration_parse`: 189000 → "2d 4h 30m", 90 → "1m 30s", 0 → "0s"."""
    if seconds is None or seconds == "":
        return ""
    remaining, shown = int(seconds), []
    for unit, size in UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            shown.append(f"{count}{unit}")
    return " ".join(shown) or "0s"


class DurationInput(forms.TextInput):
    def __init__(self, attrs: dict | None = None) -> None:
        super().__init__(
            {"class": "duration-input", "placeholder": "e.g. 2d 4h", "autocomplete": "off", **(attrs or {})}
        )

    def format_value(self, value: Any) -> str | None:
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return duration_format(int(value))
        return value  # what the person typed, shown back with its error


class DurationField(forms.Field):
    """A whole number of seconds (a PositiveIntegerField's value), typed and shown as a duration."""

    widget = DurationInput

    def __init__(self, *, min_value: int = 0, **kwargs) -> None:
        kwargs.pop("max_value", None)
        kwargs.pop("step_size", None)
        help_text = kwargs.pop("help_text", "")
        super().__init__(help_text=" ".join(filter(None, [str(help_text), DURATION_HELP])), **kwargs)
        self.min_value = min_value

    def to_python(self, value: Any) -> int | None:
        if value in (None, ""):
            return None
        if isinstance(value, int):
            return value
        try:
            seconds = duration_parse(str(value))
        except ValueError as error:
            raise ValidationError(str(error), code="invalid") from None
        if seconds < self.min_value:
            raise ValidationError(f"At least {duration_format(self.min_value)}.", code="min_value")
        return seconds


def duration_formfield(db_field, **kwargs) -> DurationField:
    """The form field for a model's seconds column (use in `formfield_for_dbfield` or a ModelForm's fields)."""
    return DurationField(
        required=not db_field.blank,
        label=kwargs.get("label", db_field.verbose_name.removesuffix(" seconds").capitalize()),
        help_text=db_field.help_text,
        initial=db_field.default if isinstance(db_field.default, int) else None,
    )


# --- send days ---------------------------------------------------------------------------------------------

WEEKDAYS = [(0, "Mon"), (1, "Tue"), (2, "Wed"), (3, "Thu"), (4, "Fri"), (5, "Sat"), (6, "Sun")]


class WeekdaysField(forms.TypedMultipleChoiceField):
    """Weekdays as checkboxes, stored as the sorted list of their numbers (0 = Monday); none ticked: every day."""

    def __init__(self, **kwargs) -> None:
        for name in ("encoder", "decoder", "max_length"):
            kwargs.pop(name, None)
        kwargs.setdefault("help_text", "None ticked: every day.")
        widget = forms.CheckboxSelectMultiple(attrs={"class": "weekday-checkboxes"})
        super().__init__(choices=WEEKDAYS, coerce=int, required=False, widget=widget, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, str):  # a JSON text, as the JSONField it replaces held it
            try:
                value = json.loads(value)
            except ValueError:
                return []
        return value

    def clean(self, value: Any) -> list[int]:
        if isinstance(value, str):
            value = self.prepare_value(value)
        return sorted(set(super().clean(value)))


# --- time zones --------------------------------------------------------------------------------------------


@cache
def time_zone_names() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


class TimeZoneSelect(forms.Select):
    """Every IANA zone in a select with a search box above it (forms.js filters the options as you type)."""

    def __init__(self, attrs: dict | None = None) -> None:
        super().__init__({"class": "tz-select", "data-searchable": "time zone", **(attrs or {})})

    def get_context(self, name: str, value: Any, attrs: dict | None) -> dict:
        names = time_zone_names()
        self.choices = [(zone, zone) for zone in ((value,) if value and value not in names else ()) + names]
        return super().get_context(name, value, attrs)


class TimeZoneField(forms.CharField):
    """A zone name; the model's validator says when it is not one (a stale value stays selectable)."""

    widget = TimeZoneSelect

    def __init__(self, **kwargs) -> None:
        kwargs.pop("max_length", None)
        kwargs.setdefault("help_text", "Type in the search box to find a zone, e.g. “berlin” or “new_york”.")
        super().__init__(**kwargs)


# --- repeatable rows -----------------------------------------------------------------------------------------


def _json_posted(data: Any, name: str) -> Any:
    """The field's value as the JSON textarea posted it (old forms, scripts), or None when not posted that way."""
    if name not in data:
        return None
    text = data.get(name)
    try:
        return json.loads(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return text  # the model's check says what is wrong with it


class StringListWidget(forms.Widget):
    """One text input per item, all named `<name>_item`, plus blank rows to add more (forms.js adds an "Add"
    button that clones a blank row)."""

    input_type = "text"
    blank_rows = 2
    add_label = "Add another"

    def __init__(self, attrs: dict | None = None, *, input_type: str = "text", add_label: str = "Add another") -> None:
        super().__init__(attrs)
        self.input_type, self.add_label = input_type, add_label

    def value_from_datadict(self, data, files, name: str) -> Any:
        posted = _json_posted(data, name)
        if posted is not None:
            return posted
        return [item.strip() for item in data.getlist(f"{name}_item") if item.strip()]

    def value_omitted_from_data(self, data, files, name: str) -> bool:
        return name not in data and f"{name}_item" not in data

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer=None) -> SafeString:
        items = value if isinstance(value, list) else ([] if value in (None, "") else [str(value)])
        rows = [*items, *[""] * self.blank_rows]
        html_rows = format_html_join(
            "",
            '<li class="repeat-row"><input type="{}" name="{}" value="{}" aria-label="{} {}"></li>',
            ((self.input_type, f"{name}_item", item, name, index + 1) for index, item in enumerate(rows)),
        )
        wrapper = '<div class="repeat-field"><ul class="repeat-rows" data-repeat-add="{}" id="{}">{}</ul></div>'
        return format_html(wrapper, self.add_label,
                           (attrs or {}).get("id", f"id_{name}"), html_rows)  # fmt: skip


class StringListField(forms.Field):
    widget = StringListWidget

    def __init__(self, **kwargs) -> None:
        for name in ("encoder", "decoder", "max_length"):
            kwargs.pop(name, None)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        return value if value not in (None, "") else []

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value


class LanguageMapWidget(forms.Widget):
    """Rows of (language code, text), posted as `<name>_language` and `<name>_text` lists in order."""

    blank_rows = 1

    def value_from_datadict(self, data, files, name: str) -> Any:
        posted = _json_posted(data, name)
        if posted is not None:
            return posted
        languages, texts = data.getlist(f"{name}_language"), data.getlist(f"{name}_text")
        pairs = [(code.strip().lower(), text.strip()) for code, text in zip(languages, texts, strict=False)]
        return {code: text for code, text in pairs if code}

    def value_omitted_from_data(self, data, files, name: str) -> bool:
        return name not in data and f"{name}_language" not in data

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer=None) -> SafeString:
        pairs = list(value.items()) if isinstance(value, dict) else []
        pairs += [("", "")] * self.blank_rows
        html_rows = format_html_join(
            "",
            '<li class="repeat-row"><input type="text" name="{0}_language" value="{1}" class="language-code" '
            'placeholder="en" aria-label="Language {3}" maxlength="12"> '
            '<input type="text" name="{0}_text" value="{2}" class="language-text" '
            'placeholder="Subject (empty: the template’s)" aria-label="Subject {3}"></li>',
            ((name, code, text, index + 1) for index, (code, text) in enumerate(pairs)),
        )
        return format_html('<div class="repeat-field"><ul class="repeat-rows language-map" data-repeat-add="Add a '
                           'language" id="{}">{}</ul></div>',
                           (attrs or {}).get("id", f"id_{name}"), html_rows)  # fmt: skip


class LanguageMapField(StringListField):
    widget = LanguageMapWidget

    def to_python(self, value: Any) -> Any:
        return value if value not in (None, "") else {}
