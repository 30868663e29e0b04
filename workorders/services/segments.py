"""Segments: eligibility rules stored as JSON, validated on save (`workorders.validators`, run by `Segment.clean`)
and compiled to one SQL query.

A rule is a JSON object with exactly one key, its kind:

    {"always": true}                                                everyone
    {"language": "fr"}  or  {"language": ["en", "fr"]}              preferred language is one of these
    {"attribute_equals": {"path": "vip", "value": true}}            attributes.vip == true (same JSON type)
    {"attribute_exists": {"path": "registered"}}                    attributes has the key (any value)
    {"attribute_contains": {"path": "registered", "value": "VT25"}} attributes.registered is a list with it
    {"in_segment": "vip-contacts"}                                  matches that segment's rule (by slug)
    {"and": [rule, ...]}  /  {"or": [rule, ...]}                    all / any of at least one rule
    {"difference": {"from": rule, "minus": rule}}                   the first set without the second

A path is dotted (``registrations.VT25.weekend1``); its parts must not be empty, contain ``__`` or be only
digits (a digit part would read as a list index). Comparisons are on JSON values, so ``true`` and ``"true"``
differ; a CSV column becomes a text attribute.

Unsubscribed contacts are never eligible: `segment_rule_contacts` (behind `segment_contacts`, and so behind
`workorders.selectors.segment_count`) filters them out, whatever the rule says, so no rule can reach them.

Rules compile to a `Q` with each `in_segment` inlined and each `difference` as ``NOT IN (subquery)`` — never
as a plain negation: a JSON key that is absent reads as NULL and ``NOT NULL`` would drop that contact.
"""

import copy
import json
from functools import reduce
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import F, JSONField, Q, QuerySet, Value
from django.db.models.fields.json import HasKey, KeyTransform
from django.db.models.functions import Cast
from django.db.models.lookups import Exact

from workorders.models import Contact, Segment
from workorders.validators import rule_path_parts, rule_shape_errors, slugs_referring_to

# --- validation (the checks are in workorders.validators, run by Segment.clean) ------------------------------


def segment_rule_validate(*, rule: Any, segment: Segment | None = None) -> None:
    """Raises ValidationError({"rule": [...], "slug": [...]}) listing every problem at once, each rule problem
    with its place ("rule.and[1].in_segment: …"): the rule's shape, references to segments that do not exist,
    cycles through `segment` (the one being saved, if any), and renaming a segment that others refer to. The
    checks are `Segment.clean`'s, so the admin form, `segment_save` and this say the same."""
    candidate = copy.copy(segment) if segment is not None else Segment()
    candidate.rule = rule
    candidate.clean()


def segment_referenced_by(*, slug: str) -> list[str]:
    """Slugs of the other segments whose rules name `slug` (they would break if it were renamed or deleted)."""
    return slugs_referring_to(slug, dict(Segment.objects.values_list("slug", "rule")))


# --- compilation -------------------------------------------------------------------------------------------


def _attribute(parts: list[str]) -> F | KeyTransform:
    """attributes -> 'a' -> 'b' … (a key that is all digits would read as a list index; validation refuses it)."""
    return reduce(lambda inner, key: KeyTransform(key, inner), parts, F("attributes"))


def _nested(parts: list[str], leaf: Any) -> dict:
    return reduce(lambda inner, key: {key: inner}, reversed(parts), leaf)


def _compile(rule: Any, rules_by_slug: dict[str, Any], chain: tuple[str, ...]) -> Q:
    kind, argument = next(iter(rule.items()))
    if kind == "always":
        return Q(pk__isnull=False)  # not Q(): an empty Q vanishes when combined with | and ~
    if kind == "language":
        return Q(language__in=[argument] if isinstance(argument, str) else argument)
    if kind == "attribute_equals":
        # jsonb = jsonb, so true and "true" differ; built from expressions, not "attributes__a__b" keyword
        # lookups, where a key named like a lookup ("contains", "exact") would be read as one.
        value = Cast(Value(json.dumps(argument["value"])), output_field=JSONField())
        return Q(Exact(_attribute(rule_path_parts(argument["path"])), value))
    if kind == "attribute_exists":
        *parents, key = rule_path_parts(argument["path"])
        return Q(HasKey(_attribute(parents), key))
    if kind == "attribute_contains":
        # Containment on the column itself, so the GIN index on attributes serves it.
        return Q(attributes__contains=_nested(rule_path_parts(argument["path"]), [argument["value"]]))
    if kind == "in_segment":
        return _compile_segment(argument, rules_by_slug, chain)
    if kind in ("and", "or"):
        conditions = [_compile(item, rules_by_slug, chain) for item in argument]
        return reduce(Q.__and__ if kind == "and" else Q.__or__, conditions)
    included = _compile(argument["from"], rules_by_slug, chain)
    excluded = _compile(argument["minus"], rules_by_slug, chain)
    return included & ~Q(pk__in=Contact.objects.filter(excluded).values("pk"))


def _compile_segment(slug: str, rules_by_slug: dict[str, Any], chain: tuple[str, ...]) -> Q:
    if slug in chain:
        raise ValidationError(f"in_segment makes a cycle ({' → '.join([*chain, slug])})")
    if slug not in rules_by_slug:
        raise ValidationError(f"in_segment {slug!r}: no segment has this slug")
    rule = rules_by_slug[slug]
    errors = rule_shape_errors(rule, "rule")
    if errors:
        raise ValidationError([f"segment {slug!r}: {error}" for error in errors])
    return _compile(rule, rules_by_slug, (*chain, slug))


def segment_rule_contacts(*, rule: Any, slug: str = "") -> QuerySet[Contact]:
    """Subscribed contacts matching `rule`, as one lazy query (no contact is loaded here). `slug` names the
    segment the rule belongs to, so a reference back to it is caught. Raises ValidationError for a rule that
    is malformed or names a missing segment or a cycle (a stored rule can go bad when another is deleted)."""
    errors = rule_shape_errors(rule, "rule")
    if errors:
        raise ValidationError(errors)
    rules_by_slug = dict(Segment.objects.values_list("slug", "rule"))
    condition = _compile(rule, rules_by_slug, (slug,) if slug else ())
    return Contact.objects.filter(subscribed=True).filter(condition)


def segment_contacts(*, segment: Segment) -> QuerySet[Contact]:
    """The contacts `segment` makes eligible now: subscribed and matching its rule (see the module docstring)."""
    return segment_rule_contacts(rule=segment.rule, slug=segment.slug)


def segment_save(*, segment: Segment) -> Segment:
    """Validates (`full_clean`: fields, rule, slug, constraints) and saves; ValidationError says what is wrong.
    The one way code other than the admin form should write a segment."""
    segment.full_clean()
    segment.save()
    return segment
