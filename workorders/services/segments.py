"""Segments: eligibility rules stored as JSON, validated on save and compiled to one SQL query.

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

import json
import re
from collections.abc import Iterable
from functools import reduce
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import F, JSONField, Q, QuerySet, Value
from django.db.models.fields.json import HasKey, KeyTransform
from django.db.models.functions import Cast
from django.db.models.lookups import Exact

from workorders.models import LANGUAGE_PATTERN, Contact, Segment

RULE_KINDS = ("always", "language", "attribute_equals", "attribute_exists", "attribute_contains", "in_segment",
              "and", "or", "difference")  # fmt: skip
MAX_DEPTH = 32
_LANGUAGE = re.compile(LANGUAGE_PATTERN)


# --- validation -------------------------------------------------------------------------------------------


def _path_parts(value: Any) -> list[str]:
    """The dotted attribute path split into keys, or ValueError with the reason."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError('expected a dotted attribute path such as "registered" or "registrations.VT25"')
    parts = value.strip().split(".")
    for part in parts:
        if not part:
            raise ValueError(f"{value!r} has an empty part")
        if "__" in part:
            raise ValueError(f"{value!r}: a key must not contain '__'")
        if part.isdigit():
            raise ValueError(f"{value!r}: a key must not be only digits")
    return parts


def _structure_errors(rule: Any, where: str, depth: int = 0) -> list[str]:
    """Every problem of one rule tree's shape, each as "where: message" (references are not followed)."""
    if depth > MAX_DEPTH:
        return [f"{where}: rules nest deeper than {MAX_DEPTH} levels"]
    if not isinstance(rule, dict) or len(rule) != 1:
        return [f"{where}: a rule is a JSON object with exactly one key, one of: {', '.join(RULE_KINDS)}"]
    kind, argument = next(iter(rule.items()))
    here = f"{where}.{kind}"
    if kind not in RULE_KINDS:
        return [f"{where}: unknown rule kind {kind!r} (expected one of: {', '.join(RULE_KINDS)})"]
    if kind == "always":
        return [] if argument is True else [f'{here}: write {{"always": true}}']
    if kind == "language":
        codes = [argument] if isinstance(argument, str) else argument
        if not isinstance(codes, list) or not codes:
            return [f'{here}: expected a language code or a non-empty list of them, e.g. ["en", "fr"]']
        return [f"{here}: {code!r} is not a lower-case language code such as en, fr or pt-br"
                for code in codes if not isinstance(code, str) or not _LANGUAGE.match(code)]  # fmt: skip
    if kind.startswith("attribute_"):
        expected = {"path"} if kind == "attribute_exists" else {"path", "value"}
        if not isinstance(argument, dict) or set(argument) != expected:
            keys = " and ".join(f'"{key}"' for key in sorted(expected))
            return [f"{here}: expected an object with exactly the keys {keys}"]
        try:
            _path_parts(argument["path"])
        except ValueError as error:
            return [f"{here}.path: {error}"]
        return []
    if kind == "in_segment":
        return [] if isinstance(argument, str) and argument else [f"{here}: expected a segment's slug"]
    if kind in ("and", "or"):
        if not isinstance(argument, list) or not argument:
            return [f"{here}: expected a non-empty list of rules"]
        return [error for index, item in enumerate(argument)
                for error in _structure_errors(item, f"{here}[{index}]", depth + 1)]  # fmt: skip
    if not isinstance(argument, dict) or set(argument) != {"from", "minus"}:
        return [f'{here}: expected {{"from": rule, "minus": rule}}']
    return [*_structure_errors(argument["from"], f"{here}.from", depth + 1),
            *_structure_errors(argument["minus"], f"{here}.minus", depth + 1)]  # fmt: skip


def _references(rule: Any) -> Iterable[str]:
    """Slugs named by `in_segment` anywhere in the tree; lenient, so it also walks a broken stored rule."""
    if isinstance(rule, dict):
        for kind, argument in rule.items():
            if kind == "in_segment" and isinstance(argument, str):
                yield argument
            else:
                yield from _references(argument)
    elif isinstance(rule, list):
        for item in rule:
            yield from _references(item)


def _cycle_from(start: str, rules_by_slug: dict[str, Any]) -> list[str] | None:
    """A chain of slugs start → … → start through in_segment references, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        slug, chain = stack.pop()
        for target in _references(rules_by_slug.get(slug)):
            if target == start:
                return [*chain, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*chain, target]))
    return None


def segment_rule_validate(*, rule: Any, segment: Segment | None = None) -> None:
    """Raises ValidationError({"rule": [...], "slug": [...]}) listing every problem at once, each rule problem
    with its place ("rule.and[1].in_segment: …"): the rule's shape, references to segments that do not exist,
    cycles through `segment` (the one being saved, if any), and renaming a segment that others refer to."""
    rule_errors = _structure_errors(rule, "rule")
    slug_errors = []
    rules_by_slug = dict(Segment.objects.values_list("slug", "rule"))
    slug = segment.slug if segment is not None else ""
    if segment is not None and segment.pk is not None:
        old_slug = Segment.objects.filter(pk=segment.pk).values_list("slug", flat=True).first()
        if old_slug and old_slug != slug:
            users = segment_referenced_by(slug=old_slug)
            if users:
                slug_errors.append(f"segments {', '.join(users)} refer to {old_slug!r}; change their rules first")
            rules_by_slug.pop(old_slug, None)
    for target in dict.fromkeys(_references(rule)):
        if target != slug and target not in rules_by_slug:
            rule_errors.append(f"rule: in_segment {target!r}: no segment has this slug")
    if slug:
        rules_by_slug[slug] = rule
        cycle = _cycle_from(slug, rules_by_slug)
        if cycle:
            rule_errors.append(f"rule: in_segment makes a cycle ({' → '.join(cycle)}); a segment cannot contain "
                               "itself")  # fmt: skip
    errors = {name: messages for name, messages in (("rule", rule_errors), ("slug", slug_errors)) if messages}
    if errors:
        raise ValidationError(errors)


def segment_referenced_by(*, slug: str) -> list[str]:
    """Slugs of the other segments whose rules name `slug` (they would break if it were renamed or deleted)."""
    return sorted(other for other, rule in Segment.objects.values_list("slug", "rule")
                  if other != slug and slug in set(_references(rule)))  # fmt: skip


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
        return Q(Exact(_attribute(_path_parts(argument["path"])), value))
    if kind == "attribute_exists":
        *parents, key = _path_parts(argument["path"])
        return Q(HasKey(_attribute(parents), key))
    if kind == "attribute_contains":
        # Containment on the column itself, so the GIN index on attributes serves it.
        return Q(attributes__contains=_nested(_path_parts(argument["path"]), [argument["value"]]))
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
    errors = _structure_errors(rule, "rule")
    if errors:
        raise ValidationError([f"segment {slug!r}: {error}" for error in errors])
    return _compile(rule, rules_by_slug, (*chain, slug))


def segment_rule_contacts(*, rule: Any, slug: str = "") -> QuerySet[Contact]:
    """Subscribed contacts matching `rule`, as one lazy query (no contact is loaded here). `slug` names the
    segment the rule belongs to, so a reference back to it is caught. Raises ValidationError for a rule that
    is malformed or names a missing segment or a cycle (a stored rule can go bad when another is deleted)."""
    errors = _structure_errors(rule, "rule")
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
