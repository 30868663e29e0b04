"""Rendering a step's template for one recipient, and building the MIME message that goes over SMTP.

Templates are Jinja2 in a SandboxedEnvironment: lead data and operators' templates can't reach Python
internals. Empty values are left out of the context so `{{ first_name | default("there") }}` falls back
as in the seed. Header injection is impossible: every header value is flattened to one line and addresses
are built with `email.headerregistry.Address`, never by string concatenation.
"""

import html
import re
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import Message
from email.policy import compat32
from email.utils import format_datetime, make_msgid
from functools import lru_cache

from django.core.mail import EmailMultiAlternatives
from jinja2 import Template, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from campaigns.models import Campaign, EmailTemplate, Recipient, SenderAccount, SequenceStep

# RFC 5322 allows 998-character lines; folding at 78 would split List-Unsubscribe and Message-ID headers.
HEADER_POLICY = compat32.clone(max_line_length=998)
_text_env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=True)
_html_env = SandboxedEnvironment(autoescape=True, keep_trailing_newline=True)
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


class TemplateRenderError(Exception):
    """A template that cannot be rendered for this recipient; fails only this recipient."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


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


def template_render(*, template: EmailTemplate, context: dict, signature: str) -> RenderedEmail:
    """Renders subject, text and HTML. The signature is appended unless the template places it itself."""
    try:
        subject = one_line(_compiled(template.subject, False).render(context))
        text = _compiled(template.body_text, False).render(context) if template.body_text else ""
        body_html = _compiled(template.body_html, True).render(context) if template.body_html else ""
        if signature and text and not _uses_signature(template.body_text):
            text = f"{text.rstrip()}\n\n{signature}\n"
        if signature and body_html and not _uses_signature(template.body_html):
            signature_html = "<br>\n".join(html.escape(line) for line in signature.splitlines())
            body_html = f'{body_html.rstrip()}\n<div class="signature">{signature_html}</div>\n'
    except TemplateError as error:
        raise TemplateRenderError(f"{type(error).__name__}: {error}") from None
    if not subject:
        raise TemplateRenderError("the subject renders empty")
    return RenderedEmail(subject=subject, text=text, html=body_html)


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
