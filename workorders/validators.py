"""Validation the models' `clean()` and the services share: language codes, a work order's subjects and testers,
and segment rules (their shape, the segments they name, cycles through them).

A leaf: it imports no module of ours, so `workorders.models` can use it; services build on models, never the
reverse. The functions here take values, not rows: a model's `clean()` reads what they need from the database.
The rule format is described in `workorders.services.segments`, which compiles rules to SQL.
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator, validate_email

LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$"
validate_language = RegexValidator(
    LANGUAGE_PATTERN, "A language is a lower-case code such as en, fr or pt-br (ISO 639, optional region)."
)
_LANGUAGE = re.compile(LANGUAGE_PATTERN)

RULE_KINDS = ("always", "language", "attribute_equals", "attribute_exists", "attribute_contains", "in_segment",
              "and", "or", "difference")  # fmt: skip
MAX_DEPTH = 32


# --- work orders -------------------------------------------------------------------------------------------


def subjects_errors(subjects: Any) -> list[str]:
    """What is wrong with a work order's `subjects` (enabled language → subject), or nothing."""
    if not isinstance(subjects, dict) or not subjects:
        return ['Enable at least one language, e.g. {"en": "Join us", "fr": ""} (empty: the template\'s subject).']
    bad = [str(code) for code in subjects if not _LANGUAGE.match(str(code))]
    bad += [f"{code}: the subject must be text" for code, subject in subjects.items() if not isinstance(subject, str)]
    return [f"Not a language code such as en or pt-br, or not text: {', '.join(bad)}."] if bad else []


def testers_errors(testers: Any) -> list[str]:
    """What is wrong with a work order's `testers` (the Test step's addresses), or nothing."""
    if not isinstance(testers, list):
        return ['Testers are a JSON list of addresses, e.g. ["ana@example.org"].']
    invalid = []
    for tester in testers:
        try:
            validate_email(tester)
        except (ValidationError, TypeError):
            invalid.append(repr(tester))
    return [f"Not email addresses: {', '.join(invalid)}."] if invalid else []


# --- segment rules -----------------------------------------------------------------------------------------


def rule_path_parts(value: Any) -> list[str]:
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


def rule_shape_errors(rule: Any, where: str, depth: int = 0) -> list[str]:
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
            rule_path_parts(argument["path"])
        except ValueError as error:
            return [f"{here}.path: {error}"]
        return []
    if kind == "in_segment":
        return [] if isinstance(argument, str) and argument else [f"{here}: expected a segment's slug"]
    if kind in ("and", "or"):
        if not isinstance(argument, list) or not argument:
            return [f"{here}: expected a non-empty list of rules"]
        return [error for index, item in enumerate(argument)
                for error in rule_shape_errors(item, f"{here}[{index}]", depth + 1)]  # fmt: skip
    if not isinstance(argument, dict) or set(argument) != {"from", "minus"}:
        return [f'{here}: expected {{"from": rule, "minus": rule}}']
    return [*rule_shape_errors(argument["from"], f"{here}.from", depth + 1),
            *rule_shape_errors(argument["minus"], f"{here}.minus", depth + 1)]  # fmt: skip


def rule_references(rule: Any) -> Iterable[str]:
    """Slugs named by `in_segment` anywhere in the tree; lenient, so it also walks a broken stored rule."""
    if isinstance(rule, dict):
        for kind, argument in rule.items():
            if kind == "in_segment" and isinstance(argument, str):
                yield argument
            else:
                yield from rule_references(argument)
    elif isinstance(rule, list):
        for item in rule:
            yield from rule_references(item)


def slugs_referring_to(slug: str, rules_by_slug: Mapping[str, Any]) -> list[str]:
    """The other slugs whose rules name `slug`, sorted."""
    return sorted(
        other for other, rule in rules_by_slug.items() if other != slug and slug in set(rule_references(rule))
    )


def _cycle_from(start: str, rules_by_slug: Mapping[str, Any]) -> list[str] | None:
    """A chain of slugs start → … → start through in_segment references, or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        slug, chain = stack.pop()
        for target in rule_references(rules_by_slug.get(slug)):
            if target == start:
                return [*chain, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*chain, target]))
    return None


def segment_rule_errors(
    *, rule: Any, slug: str, stored_slug: str | None, stored_rules: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Every problem at once, by field ("rule", "slug"), each rule problem with its place ("rule.and[1].in_segment:
    …"), of `rule` as the rule of the segment `slug` (empty: not named yet): the rule's shape, references to
    segments that do not exist, cycles through this segment, and renaming a segment that others refer to.
    `stored_rules` are the saved segments' rules by slug; `stored_slug` is this segment's saved slug (None: new)."""
    rule_errors = rule_shape_errors(rule, "rule")
    slug_errors = []
    rules_by_slug = dict(stored_rules)
    if stored_slug and stored_slug != slug:
        users = slugs_referring_to(stored_slug, rules_by_slug)
        if users:
            slug_errors.append(f"segments {', '.join(users)} refer to {stored_slug!r}; change their rules first")
        rules_by_slug.pop(stored_slug, None)
    for target in dict.fromkeys(rule_references(rule)):
        if target != slug and target not in rules_by_slug:
            rule_errors.append(f"rule: in_segment {target!r}: no segment has this slug")
    if slug:
        rules_by_slug[slug] = rule
        cycle = _cycle_from(slug, rules_by_slug)
        if cycle:
            rule_errors.append(f"rule: in_segment makes a cycle ({' → '.join(cycle)}); a segment cannot contain "
                               "itself")  # fmt: skip
    return {name: messages for name, messages in (("rule", rule_errors), ("slug", slug_errors)) if messages}
