"""Model fields more than one app may use."""

from django import forms
from django.core.exceptions import ValidationError
from django.db import models


class LowerCaseEmailFormField(forms.EmailField):
    """Cleans to the lower-case address, so a form (and an admin inline's duplicate check) sees what is stored."""

    def to_python(self, value):
        return super().to_python(value).lower()


class LowerCaseEmailField(models.EmailField):
    """An address stored lower-case, as lookups and suppressions compare them. Model forms and `full_clean`
    lower-case what a user typed; code that writes rows directly (imports, services) lower-cases itself, and a
    CheckConstraint on the model (email = Lower(email)) refuses anything else. Saving and lookups do not
    lower-case (a lookup value may be a pattern)."""

    def clean(self, value, model_instance):
        value = super().clean(value, model_instance)
        return value.strip().lower() if isinstance(value, str) else value

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": LowerCaseEmailFormField, **kwargs})


def choice_validate(*, value: str, choices: type, what: str) -> str:
    """`value` if it is one of the TextChoices `choices`, else a ValidationError that lists them."""
    if value not in choices.values:
        raise ValidationError(f"{value!r} is not a {what}; use one of: {', '.join(choices.values)}.")
    return value
