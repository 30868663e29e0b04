"""The API's JSON in and out (REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"], ["DEFAULT_RENDERER_CLASSES"]).

`JSONParser` refuses JSON nested more than `MAX_JSON_DEPTH` levels, NUL characters (PostgreSQL stores them
neither in text nor in jsonb) and lone surrogates (not Unicode: no UTF-8 response could carry them) with a 400
naming where; `StorableJSONField` does the same for a JSON field sent as a form value. `JSONRenderer` escapes what
UTF-8 cannot encode instead of failing. Apart from `emailsys.api` because DRF imports these classes while
`rest_framework.views` is still loading, and `emailsys.api` imports that module.
"""

import json
from collections.abc import Iterator
from typing import Any

from django.db import models
from rest_framework import parsers, renderers, serializers
from rest_framework.exceptions import ParseError
from rest_framework.settings import api_settings

MAX_JSON_DEPTH = 64  # arrays and objects; our deepest real body (bulk leads → recipients) has 4


def _printable(text: str) -> str:
    """`text` as it can be echoed in an error: lone surrogates and NULs as their escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        surrogate = _printable(text[error.start : error.end])
        return f"contains a lone surrogate ({surrogate}), which is not valid Unicode"
    return None


def _children(value: dict | list, path: str) -> Iterator[tuple[Any, str, str | None]]:
    """(child, its path, the problem of its key) in document order."""
    if isinstance(value, dict):
        for key, child in value.items():
            name = str(key)
            yield child, f"{path}.{_printable(name)}" if path else _printable(name), _text_problem(name)
    else:
        for index, child in enumerate(value):
            yield child, f"{path}[{index}]", None


def json_problem(value: Any, *, path: str = "", max_depth: int = MAX_JSON_DEPTH) -> tuple[str, str] | None:
    """The first place in parsed JSON that no layer below can take, as (path, problem); None if all is well.
    Iterative, so it never recurses as deep as the input."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return where, problem
        elif isinstance(item, dict | list):
            if depth > max_depth:
                return where, f"is nested more than {max_depth} levels deep"
            children = []
            for child, child_path, key_problem in _children(item, where):
                if key_problem:
                    return child_path, f"has a key that {key_problem}"
                children.append((child, child_path, depth + 1))
            stack.extend(reversed(children))
    return None


def _too_deep() -> ParseError:
    return ParseError(f"JSON parse error - nested too deeply (at most {MAX_JSON_DEPTH} levels of arrays and objects).")


class JSONParser(parsers.JSONParser):
    """DRF's parser, minus the bodies that would become a 500 further down: Python's json raises RecursionError
    (not the ValueError DRF catches) on ~1,000 levels; NULs and lone surrogates fail in PostgreSQL or in the
    response. Refused with the path of the value, under its top-level field as DRF reports field errors (a list
    body's under "detail")."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise _too_deep() from None
        found = json_problem(data)
        if found is None:
            return data
        path, problem = found
        if problem.startswith("is nested"):
            raise _too_deep()
        if not isinstance(data, dict):  # a list body (bulk): the whole body is at fault, as for a parse error
            raise ParseError(f"{path}: {problem}.")
        field = path.split(".")[0].split("[")[0]
        raise serializers.ValidationError({field or api_settings.NON_FIELD_ERRORS_KEY: [f"{path}: {problem}."]})


class StorableJSONField(serializers.JSONField):
    """A JSON field that refuses what `JSONParser` refuses, for values that did not come through it (a form
    field's JSON text, parsed here)."""

    default_error_messages = {"unstorable": "{path}: {problem}."}

    def to_internal_value(self, data: Any) -> Any:
        try:
            value = super().to_internal_value(data)
        except RecursionError:
            raise serializers.ValidationError(f"Nested more than {MAX_JSON_DEPTH} levels deep.") from None
        found = json_problem(value, path=self.field_name or "value")
        if found:
            self.fail("unstorable", path=found[0], problem=found[1])
        return value


class StorableJSONMixin:
    """For a ModelSerializer: its model's JSONFields become `StorableJSONField`s."""

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.JSONField: StorableJSONField,
    }


class JSONRenderer(renderers.JSONRenderer):
    """DRF's renderer; text UTF-8 cannot encode (a lone surrogate echoed in an error) is sent as its JSON escape
    instead of failing the response."""

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            escaped = json.dumps(data, cls=self.encoder_class, ensure_ascii=True, allow_nan=not self.strict)
            return escaped.encode("ascii")
