"""Rendering a step's template for one recipient, and building the MIME message that goes over SMTP.

Templates are Jinja2 in a SandboxedEnvironment: lead data and operators' templates can't reach Python
internals. Empty values are left out of the context so `{{ first_name | default("there") }}` falls back
as in the seed. Header injection is impossible: every header value is flattened to one line and addresses
are built with `email.headerregistry.Address`, never by string concatenation.

A template is one operator's text run for every recipient, so whatever it does fails only that recipient:
every exception while rendering (ZeroDivisionError, RecursionError, MemoryError, …) becomes a
`TemplateRenderError` naming the part. A render has a budget (TEMPLATE_RENDER_TIMEOUT_SECONDS of time,
TEMPLATE_RENDER_MAX_BYTES characters of output for subject, text and HTML together), checked in-process and
cheaply: at every output chunk, every `for` iteration and every call a template makes (macros too); products,
powers and padding that would build a string or number past the budget are refused before they are computed.
A Python object's repr (`<function str.format …>`, a list) never reaches an email: it is an error too.
"""

import html
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from email.headerregistry import Address
from email.message import Message
from email.policy import compat32
from email.utils import format_datetime, make_msgid
from functools import lru_cache, wraps
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from jinja2 import Template, TemplateSyntaxError, meta, nodes
from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEnvironment

from campaigns.models import Campaign, EmailTemplate, Lead, Recipient, SenderAccount, SequenceStep

# RFC 5322 allows 998-character lines; folding at 78 would split List-Unsubscribe and Message-ID headers.
HEADER_POLICY = compat32.clone(max_line_length=998)
_LINE_BREAKS = re.compile(r"[\r\n\x00\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")
STANDARD_VARIABLES = (
    "first_name",
    "last_name",
    "name",
    "email",
    "company_name",
    "website",
    "sender_name",
    "sender_first_name",
    "sender_last_name",
    "sender_email",
    "account_signature",
    "campaign_id",
    "step_order",
)
PARTS = {"subject": "subject", "body_text": "text", "body_html": "HTML"}  # template field → what messages call it


class TemplateRenderError(Exception):
    """A template that cannot be rendered for this recipient; fails only this recipient. `field` names the part
    (subject, body_text, body_html) and `reason` says why, without the part's name."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(f"{PARTS[field]}: {reason}" if field else reason)
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


# --- the render budget -----------------------------------------------------------------------------------------


class _Refused(Exception):
    """The template went past its budget or wrote an object into the email (the message says which)."""


class _Budget(threading.local):
    """The budget of the render running in this thread (none outside `template_render`)."""

    deadline = math.inf  # time.monotonic() past which the render stops
    left = sys.maxsize  # output characters it may still write


_budget = _Budget()
_MAX_INT_BITS = 100_000  # about 30,000 digits: more than any email needs, far less than a second of CPU


def _time_check() -> None:
    if time.monotonic() > _budget.deadline:
        raise _Refused(f"the template took longer than {settings.TEMPLATE_RENDER_TIMEOUT_SECONDS:g} s to render")


def _over_budget(what: str) -> _Refused:
    return _Refused(f"{what} would be longer than the output budget of {settings.TEMPLATE_RENDER_MAX_BYTES} characters")


def _size_check(size: int, what: str) -> None:
    if size > _budget.left:
        raise _over_budget(what)


def _budgeted_iter(iterable: Any):
    """Every `for` loop of a template iterates through this (see `_BudgetedEnvironment._generate`)."""
    budget = _budget
    for item in iterable:
        if time.monotonic() > budget.deadline:
            _time_check()
        yield item


_FORMAT_WIDTH = re.compile(r"\d{6,}")
_FORMAT_NESTED = re.compile(r"\*|\{[^{}]*\{")  # a width taken from the arguments: `%*d`, `{:>{width}}`


def _format_check(fmt: str, args: Any) -> None:
    """%-formatting and str.format: a width or precision past the budget, written in or passed as `*`/`{}`."""
    for digits in _FORMAT_WIDTH.findall(fmt):
        _size_check(int(digits), "a formatted value")
    if _FORMAT_NESTED.search(fmt):
        values = args.values() if isinstance(args, dict) else args if isinstance(args, tuple | list) else [args]
        for value in values:
            if isinstance(value, int):
                _size_check(value, "a formatted value")


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else 20


def _arguments_check(name: str, target: Any, args: tuple, kwargs: dict) -> None:
    """Refuses what would build a string past the budget: padding, indenting, wrapping, replacing, joining and
    formatting (the str methods and the filters of the same names). `target` is the string worked on (for
    `join` the separator)."""
    if not isinstance(target, str):
        return
    first = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill"):
        width = kwargs.get("width", first)
        if isinstance(width, int):
            _size_check(width, f"{name}({width})")
    elif name == "expandtabs":
        size = kwargs.get("tabsize", first if first is not None else 8)
        if isinstance(size, int):
            _size_check(len(target) + target.count("\t") * size, "expandtabs()")
    elif name == "indent":
        width = kwargs.get("width", first if first is not None else 4)
        width = width if isinstance(width, int) else _text_len(width)
        _size_check(len(target) + width * (target.count("\n") + 1), "indent()")
    elif name == "wordwrap":
        wrap = kwargs.get("wrapstring", args[2] if len(args) > 2 else None)
        _size_check(len(target) * (1 + (_text_len(wrap) if wrap else 1)), "wordwrap()")
    elif name == "replace":
        old, new = kwargs.get("old", first), kwargs.get("new", args[1] if len(args) > 1 else None)
        if isinstance(old, str) and isinstance(new, str):
            _size_check(len(target) + (target.count(old) if old else len(target) + 1) * len(new), "replace()")
    elif name in ("format", "format_map"):
        _format_check(target, kwargs or (first if name == "format_map" else args))


def _join_check(separator: str, items: list | tuple) -> None:
    _size_check(len(separator) * len(items) + sum(_text_len(item) for item in items), "join()")


def _guarded_filter(name: str, function: Any) -> Any:
    """A built-in filter that first checks its arguments against the budget (its pass-argument kept)."""
    passes_argument = getattr(function, "jinja_pass_arg", None) is not None

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        offset = 1 if passes_argument else 0
        value, rest = args[offset], args[offset + 1 :]
        if name == "join":
            items = value if isinstance(value, list | tuple) else list(value)  # a generator is read once, here
            separator = kwargs.get("d", rest[0] if rest else "")
            _join_check(separator if isinstance(separator, str) else "", items)
            args = (*args[:offset], items, *rest)
        else:
            _arguments_check(name, value, rest, kwargs)
        return function(*args, **kwargs)

    return guarded


_GUARDED_FILTERS = ("center", "indent", "wordwrap", "replace", "join", "format")


def _finalize(value: Any) -> Any:
    """What `{{ … }}` may write: text, numbers, dates (and nothing for an undefined name), never an object."""
    if isinstance(value, str | int | float | Decimal | date | time_of_day | Undefined | SampleValue) or value is None:
        return value
    kind = "a function" if callable(value) else f"a {type(value).__name__}"
    shown = repr(value)
    shown = shown if len(shown) <= 60 else f"{shown[:57]}..."
    raise _Refused(f"it would write {kind} into the email ({shown}); write text, a number or a date")


class _BudgetedEnvironment(SandboxedEnvironment):
    """The sandbox with the render budget (module docstring)."""

    intercepted_binops = frozenset(["*", "**", "%"])

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        for name in _GUARDED_FILTERS:
            self.filters[name] = _guarded_filter(name, self.filters[name])
        self.filters["_budgeted"] = _budgeted_iter

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False):
        """Every `for` loop iterates through `_budgeted_iter`, so a loop writing nothing still meets the clock."""
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_budgeted", [], [], None, None, lineno=loop.lineno)
        return super()._generate(source, name, filename, defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%":
            if isinstance(left, str):
                _format_check(left, right)
        elif isinstance(left, int) and isinstance(right, int):
            if operator == "*" and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise _Refused("a product of more than 30,000 digits")
            if operator == "**" and right > 0 and abs(left) > 1 and right * left.bit_length() > _MAX_INT_BITS:
                raise _Refused(f"{left} ** {right} has more than 30,000 digits")
        elif operator == "*":
            sequence, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(times, int) and isinstance(sequence, str | list | tuple):
                _size_check(len(sequence) * times, f"repeating a value {times} times")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        """`str.format` and `format_map`, which the sandbox wraps when they are looked up, checked first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt, name = value.__self__, value.__name__

        @wraps(wrapped)
        def guarded(*args: Any, **kwargs: Any) -> str:
            _format_check(fmt, kwargs or (args[0] if name == "format_map" and args else args))
            return wrapped(*args, **kwargs)

        return guarded

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Every call a template makes (functions, methods, macros, recursive loops) meets the clock."""
        if time.monotonic() > _budget.deadline:
            _time_check()
        target = getattr(obj, "__self__", None)
        if isinstance(target, str) and (args or kwargs):
            name = getattr(obj, "__name__", "")
            if name == "join" and args:
                items = list(args[0])
                _join_check(target, items)
                args = (items, *args[1:])
            else:
                _arguments_check(name, target, args, kwargs)
        return super().call(context, obj, *args, **kwargs)


_text_env = _BudgetedEnvironment(autoescape=False, keep_trailing_newline=True)
_html_env = _BudgetedEnvironment(autoescape=True, keep_trailing_newline=True)


def one_line(value: str) -> str:
    """Header-safe: line breaks (and other separators) become single spaces."""
    return _LINE_BREAKS.sub(" ", value).strip()


def template_context(
    *, recipient: Recipient, account: SenderAccount, campaign: Campaign, step_order: int, custom_fields: dict
) -> dict:
    """Custom lead fields first, so they can never shadow the standard variables."""
    standard = {
        "first_name": recipient.first_name,
        "last_name": recipient.last_name,
        "name": recipient.name or " ".join(filter(None, [recipient.first_name, recipient.last_name])),
        "email": recipient.email,
        "company_name": recipient.company_name,
        "website": recipient.website,
        "sender_name": account.sender_name,
        "sender_first_name": account.first_name,
        "sender_last_name": account.last_name,
        "sender_email": account.email,
        "account_signature": account.signature,
        "campaign_id": campaign.pk,
        "step_order": step_order,
    }
    context = {str(k): v for k, v in (custom_fields or {}).items() if str(k).isidentifier()}
    context.update(standard)
    return {key: value for key, value in context.items() if value not in (None, "")}


@lru_cache(maxsize=512)
def _compiled(source: str, html_part: bool) -> Template:
    """Templates are compiled once per process and source, not once per email."""
    return (_html_env if html_part else _text_env).from_string(source)


@lru_cache(maxsize=512)
def _uses_signature(source: str) -> bool:
    return "account_signature" in meta.find_undeclared_variables(_text_env.parse(source))


def _describe(error: BaseException) -> str:
    if isinstance(error, TemplateSyntaxError):
        return f"template syntax error on line {error.lineno}: {error.message}"
    if isinstance(error, _Refused):
        return str(error)
    if isinstance(error, MemoryError):
        return "MemoryError: the template needs more memory than there is"
    return f"{type(error).__name__}: {error}"


def _render_part(field: str, source: str, context: dict) -> str:
    """One part, chunk by chunk within the budget. Jinja's traceback rewriting is skipped (`root_render_func`
    instead of `render`): for a RecursionError it would compile a thousand frames."""
    try:
        template = _compiled(source, field == "body_html")
        budget, chunks = _budget, []
        for chunk in template.root_render_func(template.new_context(context)):
            budget.left -= len(chunk)
            if budget.left < 0:
                raise _over_budget(f"the {PARTS[field]}")
            chunks.append(chunk)
        return "".join(chunks)
    except Exception as error:  # noqa: BLE001 - whatever the template did, it fails this render only
        raise TemplateRenderError(_describe(error), field=field) from None


def _budget_start() -> None:
    _budget.deadline = time.monotonic() + settings.TEMPLATE_RENDER_TIMEOUT_SECONDS
    _budget.left = settings.TEMPLATE_RENDER_MAX_BYTES


def _budget_end() -> None:
    _budget.deadline, _budget.left = math.inf, sys.maxsize


def template_render(*, template: EmailTemplate, context: dict, signature: str) -> RenderedEmail:
    """Renders subject, text and HTML within the render budget; any failure is a TemplateRenderError naming the
    part. The signature is appended unless the template places it itself."""
    _budget_start()
    try:
        subject = one_line(_render_part("subject", template.subject, context))
        text = _render_part("body_text", template.body_text, context) if template.body_text else ""
        body_html = _render_part("body_html", template.body_html, context) if template.body_html else ""
    finally:
        _budget_end()
    if signature and text and not _uses_signature(template.body_text):
        text = f"{text.rstrip()}\n\n{signature}\n"
    if signature and body_html and not _uses_signature(template.body_html):
        signature_html = "<br>\n".join(html.escape(line) for line in signature.splitlines())
        body_html = f'{body_html.rstrip()}\n<div class="signature">{signature_html}</div>\n'
    if not subject:
        raise TemplateRenderError("it renders empty", field="subject")
    return RenderedEmail(subject=subject, text=text, html=body_html)


# --- sample values, variables, checking a template -------------------------------------------------------------


class SampleValue:
    """Stands in for a variable we have no sample of (a lead's custom field, an event's field): it shows as
    `[name]`, and whatever a template does with it (an attribute, a call, arithmetic, a loop) gives a sample."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"[{self.name}]"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return str(self)

    def __getattr__(self, attribute: str) -> "SampleValue":
        if attribute.startswith("_") or attribute in ("unsafe_callable", "alters_data", "jinja_pass_arg"):
            raise AttributeError(attribute)
        return SampleValue(f"{self.name}.{attribute}")

    def __getitem__(self, key: Any) -> "SampleValue":
        return SampleValue(f"{self.name}[{key}]")

    def __iter__(self):
        return iter((SampleValue(f"{self.name} item"),))

    def __call__(self, *args: Any, **kwargs: Any) -> "SampleValue":
        return self

    def __len__(self) -> int:
        return 1

    def __bool__(self) -> bool:
        return True

    def __int__(self) -> int:
        return 0

    __index__ = __int__

    def __float__(self) -> float:
        return 0.0

    def _same(self, *other: Any) -> "SampleValue":
        return self

    def _divided(self, other: Any) -> "SampleValue":
        if isinstance(other, int | float | Decimal) and other == 0:  # whatever the value, this always fails
            raise ZeroDivisionError("division by zero")
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __rtruediv__ = __rfloordiv__ = __rmod__ = _same
    __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = __round__ = _same
    __truediv__ = __floordiv__ = __mod__ = _divided

    def __lt__(self, other: Any) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__


SAMPLE_RECIPIENT = {"email": "jane.doe@example.com", "first_name": "Jane", "last_name": "Doe",
                    "company_name": "Example Inc", "website": "example.com"}  # fmt: skip
SAMPLE_ACCOUNT = {"email": "sam.sender@example.com", "first_name": "Sam", "last_name": "Sender",
                  "signature": "Sam Sender\nExample Inc"}  # fmt: skip


@lru_cache(maxsize=512)
def _variables(source: str) -> tuple[frozenset[str], frozenset[str]]:
    """The names a source reads from its context, and those of them it shows unguarded: not only under
    `default`, an `is defined` test or an `{% if name %}` (where an empty value is the template's choice)."""
    try:
        tree = _text_env.parse(source)
        undeclared = meta.find_undeclared_variables(tree)
    except TemplateSyntaxError:  # also an unknown filter or test: `template_check` reports it
        return frozenset(), frozenset()
    shown: set[str] = set()
    _shown_names(tree, frozenset(), shown)
    return frozenset(undeclared), frozenset(undeclared & shown)


def _shown_names(node: nodes.Node, guarded: frozenset[str], found: set[str]) -> None:
    if isinstance(node, nodes.Name):
        if node.ctx == "load" and node.name not in guarded:
            found.add(node.name)
        return
    skipped: nodes.Node | None = None
    if isinstance(node, nodes.Filter) and node.name in ("default", "d") or isinstance(node, nodes.Test):
        skipped = node.node
    elif isinstance(node, nodes.If | nodes.CondExpr):
        skipped = node.test
        tested = [node.test, *node.test.find_all(nodes.Name)]  # find_all: the descendants only
        guarded = guarded | {name.name for name in tested if isinstance(name, nodes.Name)}
    for child in node.iter_child_nodes():
        if child is not skipped:
            _shown_names(child, guarded, found)


def template_variables(template: EmailTemplate) -> frozenset[str]:
    """Every variable subject, text and HTML read (standard ones and the leads' custom fields)."""
    return frozenset().union(*(_variables(getattr(template, field) or "")[0] for field in PARTS))


def template_empty_variables(*, template: EmailTemplate, context: dict) -> list[str]:
    """The variables the template shows that are missing or empty in `context`: they render as nothing (a
    warning for previews and test sends; a variable under `default` or `{% if %}` is not listed)."""
    shown = frozenset().union(*(_variables(getattr(template, field) or "")[1] for field in PARTS))
    return sorted(name for name in shown if context.get(name) in (None, "", [], {}))


def sample_account() -> SenderAccount:
    return SenderAccount(**SAMPLE_ACCOUNT)


def sample_recipient(*, campaign: Campaign, templates: list[EmailTemplate]) -> Recipient:
    """A made-up recipient (unsaved) for previews, test sends and checks without a lead: a value for every
    standard variable and a `SampleValue` for every other variable the templates read (its lead's custom
    fields)."""
    names = frozenset().union(*(template_variables(template) for template in templates))
    custom_fields = {name: SampleValue(name) for name in sorted(names - set(STANDARD_VARIABLES))}
    return Recipient(lead=Lead(campaign=campaign, custom_fields=custom_fields), position=0, **SAMPLE_RECIPIENT)


def template_sample_context(template: EmailTemplate) -> dict:
    """What a template renders with when there is no campaign, lead or account: sample values for every variable
    (`template_check`, the admin's preview; the account's signature is SAMPLE_ACCOUNT's)."""
    account, campaign = sample_account(), Campaign(pk=1)
    recipient = sample_recipient(campaign=campaign, templates=[template])
    return template_context(recipient=recipient, account=account, campaign=campaign, step_order=1,
                            custom_fields=recipient.lead.custom_fields)  # fmt: skip


def template_check(template: EmailTemplate) -> dict[str, str]:
    """What keeps a template from rendering, by field (empty: nothing): syntax, unknown filters and tests, and a
    render of each part with sample values within the render budget. The admin form, the API and the YAML import
    check with this before saving, so the operator sees the error on the field, not in failed sends."""
    context = template_sample_context(template)
    errors = {}
    for field in PARTS:
        source = getattr(template, field) or ""
        _budget_start()
        try:
            rendered = _render_part(field, source, context)
        except TemplateRenderError as error:
            errors[field] = error.reason
            continue
        finally:
            _budget_end()
        if field == "subject" and source and not one_line(rendered):
            errors[field] = "it renders empty"
    return errors


def subject_is_placeholder(subject: str) -> bool:
    """A subject with no letter or digit ("-", "…", empty) stands in for "Re: the previous email"; it must never
    reach a recipient as such."""
    return not any(character.isalnum() for character in subject)


def step_render(
    *, step: SequenceStep, recipient: Recipient, account: SenderAccount, previous_subject: str | None = None
) -> RenderedEmail:
    """A threaded follow-up replies to the recipient's previous email (`previous_subject`, sent or maybe sent):
    `Re:` its subject. Without one (it failed or was skipped) the email starts afresh, and a placeholder subject
    gives way to the nearest earlier step's own subject."""
    lead = recipient.lead
    context = template_context(
        recipient=recipient,
        account=account,
        campaign=step.campaign,
        step_order=step.order,
        custom_fields=lead.custom_fields,
    )
    rendered = template_render(template=step.template, context=context, signature=account.signature)
    subject = rendered.subject
    if step.threaded and previous_subject and not subject_is_placeholder(previous_subject):
        subject = previous_subject if previous_subject.lower().startswith("re:") else f"Re: {previous_subject}"
    elif subject_is_placeholder(subject):
        subject = _earlier_step_subject(step, context=context, signature=account.signature)
    if subject != rendered.subject:
        rendered = RenderedEmail(subject=subject, text=rendered.text, html=rendered.html)
    return rendered


def _earlier_step_subject(step: SequenceStep, *, context: dict, signature: str) -> str:
    """The nearest earlier step's subject that is a real one (a rare path: one query)."""
    earlier = SequenceStep.objects.filter(campaign_id=step.campaign_id, order__lt=step.order).select_related("template")
    for candidate in earlier.order_by("-order"):
        subject = template_render(template=candidate.template, context=context, signature=signature).subject
        if not subject_is_placeholder(subject):
            return subject
    raise TemplateRenderError(f"step {step.order}'s subject is a placeholder and no earlier step has a real one")


def message_id_new(*, account: SenderAccount) -> str:
    return make_msgid(domain=account.email.rpartition("@")[2] or "localhost")


# Our header on every campaign and mailing send: a bounce that quotes the original's headers leads back to the
# send even where a relay rewrote the Message-ID. A reference, not a secret: "c." (campaign) or "m." (mailing),
# then the Message-ID we generated, without <> (SendRecord / MailingSend.message_id, indexed).
SEND_REFERENCE_HEADER = "X-Emailsys-Send"


def send_reference(*, kind: str, message_id: str) -> str:
    """The X-Emailsys-Send value of a campaign send (kind "c") or a mailing send (kind "m")."""
    return f"{kind}.{message_id.strip().strip('<>')}"


def message_build(
    *,
    rendered: RenderedEmail,
    account: SenderAccount,
    to_email: str,
    to_name: str,
    message_id: str,
    date: datetime,
    unsubscribe_url: str | None,
    references: list[str] | tuple[str, ...] = (),
    extra_headers: dict[str, str] | None = None,
    unsubscribe_label: str = "Unsubscribe",
) -> Message:
    """The exact message handed to SMTP (stored verbatim on the send record). `unsubscribe_label` is the
    footer link's text (event mailings give it in the email's language).

    Built by Django's mail classes: they refuse line breaks in headers and encode non-ASCII names and
    subjects, at a quarter of the CPU of `email.message.EmailMessage` with the SMTP policy. Addresses are
    checked by `Address` first (one address each, nothing smuggled in after it).
    """
    sender = Address(display_name=one_line(account.sender_name), addr_spec=account.email)
    to = Address(display_name=one_line(to_name), addr_spec=to_email)
    headers = {"Date": format_datetime(date), "Message-ID": message_id}
    if references:
        headers["In-Reply-To"] = references[-1]
        headers["References"] = " ".join(references)
    if unsubscribe_url:
        # RFC 8058 one-click: mailbox providers POST "List-Unsubscribe=One-Click" to the URL.
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    headers.update({name: one_line(value) for name, value in (extra_headers or {}).items()})
    text = rendered.text
    if unsubscribe_url and text:
        text = f"{text.rstrip()}\n\n{unsubscribe_label}: {unsubscribe_url}\n"
    body_html = rendered.html
    if unsubscribe_url and body_html:
        link = (
            f'<p class="unsubscribe"><a href="{html.escape(unsubscribe_url)}">{html.escape(unsubscribe_label)}</a></p>'
        )
        body_html = f"{body_html.rstrip()}\n{link}\n"
    email = EmailMultiAlternatives(
        subject=one_line(rendered.subject), body=text or "", from_email=str(sender), to=[str(to)], headers=headers
    )
    if body_html:
        email.attach_alternative(body_html, "text/html")
    message = email.message()
    message.policy = HEADER_POLICY
    return message
